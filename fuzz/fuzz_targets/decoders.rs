//! Every consumer's decoder on arbitrary bytes: none may panic, and a refusal must give a
//! reason (what the dead-letter topic records).
#![no_main]

use herald::model::Channel;
use libfuzzer_sys::fuzz_target;

fn reason<T>(r: Result<T, String>) {
    if let Err(why) = r {
        assert!(!why.trim().is_empty());
    }
}

fuzz_target!(|data: &[u8]| {
    for channel in Channel::ALL {
        reason(herald::dispatch::decode_work(Some(data), channel));
    }
    reason(herald::campaigns::fanout::decode_batch(Some(data)));
    reason(herald::metrics::event_of(Some(data)));
    reason(herald::events::sales::sale_of(Some(data)));
    reason(herald::events::activity::user_event_of(Some(data)));
});
