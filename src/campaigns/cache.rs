//! Campaign definitions held in memory by the workers that read one per batch or fallback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::model::{Campaign, CampaignId};
use crate::store::{CampaignStore, StoreError};

/// Campaign definitions never change once stored, so the workers that need one per batch
/// or per fallback read each from Redis once.
/// Campaigns held at once; past it the cache starts again (each is one Redis read away).
const MAX_CACHED: usize = 1024;

#[derive(Default)]
pub struct CampaignCache {
    campaigns: Mutex<HashMap<CampaignId, Arc<Campaign>>>,
}

impl CampaignCache {
    fn map(&self) -> MutexGuard<'_, HashMap<CampaignId, Arc<Campaign>>> {
        self.campaigns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The campaign, from memory or Redis; `None` if it does not exist.
    pub async fn get(
        &self,
        store: &CampaignStore,
        id: &CampaignId,
    ) -> Result<Option<Arc<Campaign>>, StoreError> {
        if let Some(c) = self.map().get(id) {
            return Ok(Some(c.clone()));
        }
        let Some(c) = store.campaign(id).await? else {
            return Ok(None);
        };
        let c = Arc::new(c);
        let mut map = self.map();
        // Bounded: finished campaigns are forgotten, but a worker that never sees a campaign
        // finish (it dies and another retires it) must not keep it for ever.
        if map.len() >= MAX_CACHED {
            map.clear();
        }
        map.insert(id.clone(), c.clone());
        Ok(Some(c))
    }

    /// Drops a finished campaign.
    pub fn forget(&self, id: &CampaignId) {
        self.map().remove(id);
    }
}
