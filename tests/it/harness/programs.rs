//! The fleet's programs started in-process, each as the tests need it.

use super::*;

impl Fleet {
    /// Starts an in-process dispatcher; it stops when `stop` (or the fleet) is cancelled.
    pub async fn start_dispatcher(
        &self,
        channel: Channel,
        stop: CancellationToken,
    ) -> (Arc<Dispatcher>, tokio::task::JoinHandle<()>) {
        self.start_dispatcher_with(channel, stop, self.provider_args())
            .await
    }

    /// As [`Fleet::start_dispatcher`], with the provider client's settings given.
    pub async fn start_dispatcher_with(
        &self,
        channel: Channel,
        stop: CancellationToken,
        provider: ProviderArgs,
    ) -> (Arc<Dispatcher>, tokio::task::JoinHandle<()>) {
        self.start_dispatcher_through(channel, stop, provider, ProvidersArgs::default())
            .await
    }

    /// As [`Fleet::start_dispatcher_with`], with the providers' configuration given too
    /// (an SMTP server for e-mail, say).
    pub async fn start_dispatcher_through(
        &self,
        channel: Channel,
        stop: CancellationToken,
        provider: ProviderArgs,
        providers: ProvidersArgs,
    ) -> (Arc<Dispatcher>, tokio::task::JoinHandle<()>) {
        let args = dispatch::program::Args {
            providers,
            common: self.common(),
            // Longer than a provider call can take, as in production (30 s vs 2 s).
            lease_ms: 5_000.max(2 * provider.provider_timeout_ms),
            provider,
            health: HealthArgs { health_addr: None },
            channel,
            max_in_flight: 256,
            shutdown_grace_ms: 5_000,
            request_uncertain_send: herald::model::UncertainSend::Skip,
        };
        let program = dispatch::program::Program::from_args(&args)
            .await
            .expect("dispatcher set-up");
        let d = program.dispatcher.clone();
        let handle = spawn_checked(&self.failures, "a dispatcher", program.run(stop));
        (d, handle)
    }

    /// Starts in-process campaign fan-out with the built-in rules.
    pub async fn start_fanout(&self, stop: CancellationToken) -> Arc<FanOut> {
        self.start_fanout_with(RulesArgs::default(), stop).await
    }

    /// Starts in-process campaign fan-out with these rules.
    pub async fn start_fanout_with(
        &self,
        rules: RulesArgs,
        stop: CancellationToken,
    ) -> Arc<FanOut> {
        let args = fanout::Args {
            common: self.common(),
            rules,
            health: HealthArgs { health_addr: None },
            max_lag: 10_000,
        };
        let program = fanout::Program::from_args(&args)
            .await
            .expect("fan-out set-up");
        let f = program.fanout.clone();
        spawn_checked(&self.failures, "fan-out", program.run(stop));
        f
    }

    /// Starts an in-process `herald-retry` with short leases, as tests need; flash promos
    /// are left to the tests that activate them.
    pub async fn start_retry(&self, stop: CancellationToken) -> Arc<Retrier> {
        self.start_retry_with(RulesArgs::default(), stop).await
    }

    /// Starts an in-process `herald-retry` with these rules.
    pub async fn start_retry_with(
        &self,
        rules: RulesArgs,
        stop: CancellationToken,
    ) -> Arc<Retrier> {
        let args = herald::schedulers::Args {
            common: self.common(),
            rules,
            health: HealthArgs { health_addr: None },
            poll_ms: 50,
            claim_lease_ms: 3_000,
            watch_ms: 5_000,
            promo_poll_ms: 0,
            request_reconcile_ms: 100,
        };
        let program = herald::schedulers::Program::from_args(&args)
            .await
            .expect("retry set-up");
        let r = program.retrier.clone();
        spawn_checked(&self.failures, "retry", program.run(stop));
        r
    }

    /// Starts an in-process `herald-metrics` in consumer group `group` with its HTTP side on
    /// an ephemeral port; returns it and its base URL.
    pub async fn start_metrics(
        &self,
        group: &str,
        stop: CancellationToken,
    ) -> (Arc<Aggregator>, String) {
        let args = metrics::program::Args {
            common: self.common(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            api_keys_file: Some(self.keys_file.clone()),
            open_on_loopback: false,
            group: Some(group.to_string()),
            batch: 5000,
            flush_ms: 50,
        };
        let program = metrics::program::Program::from_args(&args)
            .await
            .expect("metrics set-up");
        let url = format!("http://{}", program.local_addr().unwrap());
        let agg = program.aggregator.clone();
        spawn_checked(&self.failures, "the metrics aggregator", program.run(stop));
        (agg, url)
    }

    /// Starts one in-process `herald-events` consumer in consumer group `group`, with
    /// small batches; returns its counters.
    pub fn start_events<C: Consume>(
        &self,
        work: C,
        group: &str,
        stop: CancellationToken,
    ) -> Arc<RoleStats> {
        let stats = Arc::new(RoleStats::default());
        let run = herald::events::run(
            Arc::new(work),
            kafka::consumer(self.brokers(), group).unwrap(),
            kafka::producer(self.brokers()).unwrap(),
            self.topics.clone(),
            BatchConfig {
                max_batch: 100,
                flush_interval: Duration::from_millis(20),
            },
            stats.clone(),
            stop,
        );
        spawn_checked(&self.failures, "an events consumer", async move {
            run.await.map_err(anyhow::Error::from)
        });
        stats
    }
}
