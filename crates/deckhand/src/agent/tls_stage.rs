//! The agent's side of `deckhand tls enable` ([`crate::tls_enable`]): it
//! reads its stage from `config/tls` at every iteration and, when the key
//! asks for a later stage than the one applied (and the agent config has no
//! `[tls]` of its own), applies it: checks the certificate files at the
//! default paths, rewrites the member environment (certificate files, and
//! at `https` the `https://` listeners and advertised URLs) and restarts
//! the member, or for a proxy node rewrites the proxy environment at
//! `https`; records the stage in the state dir; and switches its own
//! settings, URLs and cluster client over in place. A stage is never taken
//! back by the agent.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use deckhand_etcd::Cluster;
use deckhand_systemd::{parse_env_file, write_atomic};

use super::context::{Context, REQUEST_TIMEOUT};
use super::local::{MEMBER_UNIT, PROXY_UNIT, member_env, proxy_env};
use crate::tls_enable::{self, Rollout, Stage};
use crate::{member_check, paths};

/// The stage as the agent holds it.
#[derive(Debug, Clone)]
pub struct TlsStage {
    /// The stage applied (for a config with `[tls]`: `https`).
    pub applied: Stage,
    /// The agent config has `[tls]` on: the key is not followed.
    pub from_config: bool,
}

impl TlsStage {
    /// The stage to report in the status: absent for a plaintext node
    /// that never took part.
    pub fn reported(&self) -> Option<&'static str> {
        (self.applied != Stage::Plain).then_some(self.applied.as_str())
    }

    /// Follows `config/tls`: applies a later stage the key names for this
    /// node. Returns what it did, if anything.
    ///
    /// # Errors
    /// The key cannot be parsed, the certificate files cannot be
    /// used, or an env file or unit restart failed (nothing recorded then:
    /// the next iteration tries again).
    pub async fn follow(&mut self, ctx: &mut Context) -> Result<Option<String>> {
        if self.from_config {
            return Ok(None);
        }
        let key = ctx.store.keyspace().tls_rollout();
        let mut kv = ctx.store.client();
        // Unreadable (localhost:2379 restarting): look again next time.
        let Ok(Ok(resp)) = tokio::time::timeout(REQUEST_TIMEOUT, kv.get(key.clone(), None)).await
        else {
            return Ok(None);
        };
        let Some(value) = resp.kvs().first().map(|kv| kv.value().to_vec()) else {
            return Ok(None);
        };
        let rollout = Rollout::parse(&value).with_context(|| format!("the key {key}"))?;
        let want = rollout.stage_of(&ctx.identity.id);
        if want <= self.applied {
            return Ok(None);
        }
        let what = apply(ctx, want).await?;
        self.applied = want;
        Ok(Some(what))
    }
}

/// Applies `stage` on this node (see the module doc).
async fn apply(ctx: &mut Context, stage: Stage) -> Result<String> {
    let files = tls_enable::default_files();
    let node = crate::tls::load_node(&files).context("cannot turn TLS on")?;
    crate::tls::check_node_identity(&node.node, &ctx.identity.name, ctx.identity.address)
        .context("cannot turn TLS on")?;
    crate::tls::require_valid(&node.node, super::observe::unix_now())
        .context("cannot turn TLS on")?;
    let settings = tls_enable::apply(ctx.settings.clone(), stage);
    let mut identity = ctx.identity.clone();
    identity.tls = stage == Stage::Https;
    // Its own cluster client, checked before anything changes.
    let endpoints = ctx.cluster.endpoints();
    let endpoints = if stage == Stage::Https {
        endpoints.iter().map(|e| tls_enable::to_https(e)).collect()
    } else {
        endpoints
    };
    let cluster = Cluster::connect(&endpoints, REQUEST_TIMEOUT, Some(&node.client))
        .await
        .context("reconnecting the cluster client with the node certificate")?;
    let state_dir = ctx.local.state_dir.clone();
    let mut did = Vec::new();

    // The member: its env with the files (and at https the listeners).
    let member_path = state_dir.join(paths::MEMBER_ENV);
    if let Ok(text) = std::fs::read_to_string(&member_path) {
        let vars: BTreeMap<String, String> = parse_env_file(&text);
        let mut initial = vars
            .get("ETCD_INITIAL_CLUSTER")
            .cloned()
            .unwrap_or_default();
        if stage == Stage::Https {
            initial = tls_enable::initial_cluster_to_https(&initial);
        }
        let state = vars
            .get("ETCD_INITIAL_CLUSTER_STATE")
            .cloned()
            .unwrap_or_else(|| "existing".into());
        let localhost = vars.get("ETCD_LISTEN_CLIENT_URLS").is_some_and(|v| {
            v.split(',')
                .any(|u| u == crate::connect::LOCALHOST_CLIENT_URL)
        });
        let recorded = member_check::recorded_identity(&vars);
        let env = member_env(
            &identity,
            &settings,
            &initial,
            &state,
            localhost,
            recorded.member_id,
            recorded.cluster_id,
        )?;
        write_atomic(&member_path, env.as_bytes(), 0o644)
            .with_context(|| format!("writing {}", member_path.display()))?;
        if ctx.local.systemd.unit_state(MEMBER_UNIT).await?.is_active() {
            tracing::info!("TLS stage {stage}: restarting the member with its new environment");
            ctx.local
                .systemd
                .restart(MEMBER_UNIT, super::local::JOB_TIMEOUT)
                .await?;
            did.push(format!("restarted the member for TLS stage {stage}"));
        }
    }
    // The proxy: at https, its endpoints https:// and its certificate.
    let proxy_path = state_dir.join(paths::PROXY_ENV);
    if stage == Stage::Https
        && let Ok(text) = std::fs::read_to_string(&proxy_path)
    {
        let vars = parse_env_file(&text);
        let endpoints: Vec<String> = vars
            .get("PROXY_ENDPOINTS")
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(tls_enable::to_https)
                    .collect()
            })
            .unwrap_or_default();
        let env = proxy_env(&settings, &endpoints)?;
        if env != text {
            write_atomic(&proxy_path, env.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", proxy_path.display()))?;
            if ctx.local.systemd.unit_state(PROXY_UNIT).await?.is_active() {
                ctx.local
                    .systemd
                    .restart(PROXY_UNIT, super::local::JOB_TIMEOUT)
                    .await?;
                did.push(format!("restarted the proxy for TLS stage {stage}"));
            }
        }
    }
    tls_enable::write_stage(&state_dir, stage)?;
    ctx.cluster = cluster;
    ctx.settings = settings.clone();
    ctx.identity = identity.clone();
    ctx.local.settings = settings;
    ctx.local.identity = identity;
    did.push(format!("applied TLS stage {stage}"));
    Ok(did.join("; "))
}
