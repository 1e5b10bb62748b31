//! Channel health as dispatchers announce it: while a channel's provider circuit is open,
//! fan-out and retry try that channel last. Announcements expire on their own, so a
//! dispatcher that dies cannot leave a channel marked unhealthy.

use std::time::Duration;

use redis::AsyncCommands;

use super::{Store, StoreError};
use crate::model::Channel;

impl Store {
    pub(super) fn health_key(&self, channel: Channel) -> String {
        format!("{}:health:{channel}", self.ns)
    }

    /// Dispatchers announce an open provider circuit; rules then try that channel last.
    pub async fn set_unhealthy(
        &self,
        channel: Channel,
        for_how_long: Duration,
    ) -> Result<(), StoreError> {
        let (mut c, generation) = self.connection();
        let _: () = self
            .bounded(
                generation,
                c.pset_ex(
                    self.health_key(channel),
                    "open",
                    for_how_long.as_millis() as u64,
                ),
            )
            .await?;
        Ok(())
    }

    pub async fn unhealthy_channels(&self) -> Result<Vec<Channel>, StoreError> {
        let mut pipe = redis::pipe();
        for ch in Channel::ALL {
            pipe.exists(self.health_key(ch));
        }
        let open: Vec<bool> = self.query_pipe(&pipe).await?;
        Ok(Channel::ALL
            .into_iter()
            .zip(open)
            .filter_map(|(ch, o)| o.then_some(ch))
            .collect())
    }
}
