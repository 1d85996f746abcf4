//! Request latency through one etcd endpoint, for `integration/bench-tls`:
//! `kvbench [--endpoint URL] [--ops N] [--prefix P]` writes N small keys
//! one after the other (each a 16-byte value under P), then reads each back
//! (linearizable range requests, one after the other), on one gRPC
//! connection, and prints one line of JSON with the latencies in
//! milliseconds: `{"endpoint":…,"ops":N,"put_p50_ms":…,"put_p99_ms":…,
//! "get_p50_ms":…,"get_p99_ms":…}`. Deletes its keys afterwards.
//!
//! Copied into a harness node and run there against `localhost:2379`, the
//! endpoint local clients use: on a member node that is the member itself,
//! on a proxy node the grpc-proxy, whose hop to the members is TLS or not.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use etcd_client::{Client, ConnectOptions, DeleteOptions};

#[derive(Parser)]
#[command(about = "Sequential put and get latency through one etcd endpoint")]
struct Args {
    /// The endpoint (plaintext: the node's localhost:2379).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    endpoint: String,
    /// Puts, then as many gets.
    #[arg(long, default_value_t = 1000)]
    ops: usize,
    /// Key prefix (deleted afterwards).
    #[arg(long, default_value = "/bench/kv/")]
    prefix: String,
}

/// The `q` quantile (0..=1) of sorted `v`, in milliseconds.
fn quantile_ms(v: &[Duration], q: f64) -> f64 {
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1].as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    let a = Args::parse();
    ensure!(a.ops > 0, "--ops must be at least 1");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        let mut c = Client::connect([a.endpoint.as_str()], Some(opts))
            .await
            .with_context(|| format!("connecting to {}", a.endpoint))?;
        let value = "0123456789abcdef";
        // One warm-up request: the connection is up before the clock runs.
        c.put(format!("{}warmup", a.prefix), value, None).await?;
        let mut puts = Vec::with_capacity(a.ops);
        for i in 0..a.ops {
            let t = Instant::now();
            c.put(format!("{}{i:06}", a.prefix), value, None).await?;
            puts.push(t.elapsed());
        }
        let mut gets = Vec::with_capacity(a.ops);
        for i in 0..a.ops {
            let t = Instant::now();
            let r = c.get(format!("{}{i:06}", a.prefix), None).await?;
            gets.push(t.elapsed());
            ensure!(r.kvs().len() == 1, "key {i} missing on read-back");
        }
        c.delete(a.prefix.as_str(), Some(DeleteOptions::new().with_prefix()))
            .await?;
        puts.sort();
        gets.sort();
        println!(
            "{{\"endpoint\":\"{}\",\"ops\":{},\"put_p50_ms\":{:.2},\"put_p99_ms\":{:.2},\"get_p50_ms\":{:.2},\"get_p99_ms\":{:.2}}}",
            a.endpoint,
            a.ops,
            quantile_ms(&puts, 0.50),
            quantile_ms(&puts, 0.99),
            quantile_ms(&gets, 0.50),
            quantile_ms(&gets, 0.99)
        );
        Ok(())
    })
}
