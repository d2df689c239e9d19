//! `pulsewatch demo`: the whole pipeline on a throwaway database, finished in seconds.

use super::receiver::Receiver;
use super::run::{report, supervise};
use super::{safety, signals};
use anyhow::Context;
use clap::Args as ClapArgs;
use pulsewatch::{Change, ChangeKind, Home, Log, RunOptions, manifest, sha256_hex};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The example plugins, built from guest/examples by the build script: file name and bytes.
const COMPONENTS: [(&str, &[u8]); 4] = [
    (
        "kind-counts",
        include_bytes!(concat!(env!("PULSEWATCH_GUEST_DIR"), "/kind-counts.wasm")),
    ),
    (
        "filter-jsonl",
        include_bytes!(concat!(env!("PULSEWATCH_GUEST_DIR"), "/filter-jsonl.wasm")),
    ),
    (
        "tenant-totals",
        include_bytes!(concat!(env!("PULSEWATCH_GUEST_DIR"), "/tenant-totals.wasm")),
    ),
    (
        "webhook",
        include_bytes!(concat!(env!("PULSEWATCH_GUEST_DIR"), "/webhook.wasm")),
    ),
];

/// The demo's plugins: name, component, extra manifest lines (`{receiver}` is the address of
/// the demo's webhook receiver). tenant-totals derives an event per order change into
/// totals.redb, which totals-counts reads: a pipeline.
const PLUGINS: [(&str, &str, &str); 5] = [
    ("kind-counts", "kind-counts", ""),
    (
        "filter-jsonl",
        "filter-jsonl",
        "args = [\"kind=deleted\"]\n",
    ),
    (
        "tenant-totals",
        "tenant-totals",
        "outputs = [\"totals.redb\"]\n",
    ),
    ("totals-counts", "kind-counts", "input = \"totals.redb\"\n"),
    (
        "webhook",
        "webhook",
        "args = [\"http://{receiver}/orders\", \"kind=deleted\"]\n\
         allowed_outbound_hosts = [\"http://{receiver}\"]\n\
         webhook_secret = \"{secret}\"    # in production: { env = \"VARIABLE\" }\n",
    ),
];

/// The demo receiver's signing secret, which the webhook plugin's host signs with. A real
/// manifest names an environment variable that holds it instead.
const DEMO_SECRET: &str = "whsec_cHVsc2V3YXRjaC1kZW1vLXNpZ25pbmcta2V5";

/// The top of the manifest the demo writes: a starting point for a user's own.
const MANIFEST_HEADER: &str = "\
# The plugins of the demo: `pulsewatch run --manifest plugins.toml --db events.redb --state-dir state`.
# Per plugin: args, env, start (\"beginning\", \"head\" or a seq), restart (\"on-failure\" or
# \"never\"), and [plugin.limits] (memory_mib, cpu, wall_clock, disk_mib, ...); see the README.
";

/// Arguments of `pulsewatch demo`.
#[derive(ClapArgs)]
pub struct Args {
    /// Where the demo database and plugin state go: an empty or new directory, or an earlier
    /// demo's, of which only what the demo wrote is replaced [default: the user's data
    /// directory, e.g. ~/.local/share/pulsewatch/demo].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Events written before the plugins first run (at most 10,000,000).
    #[arg(long, default_value_t = 20_000, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    events: u32,
}

fn default_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("pulsewatch")
        .join("demo")
}

/// splitmix64: a reproducible stream for a reproducible demo.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn uuid_v4(&mut self) -> u128 {
        let raw = (u128::from(self.next()) << 64) | u128::from(self.next());
        (raw & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62)
    }
}

/// Orders moving through a lifecycle in a few tenants: created, updated a few times, sometimes
/// archived, sometimes deleted.
struct Shop {
    rng: Rng,
    tenants: Vec<(u128, &'static str)>,
    /// Orders not yet archived or deleted: (entity, tenant, version, order number).
    live: Vec<(u128, usize, u32, u64)>,
    clock_ms: u64,
    next_order: u64,
}

impl Shop {
    fn new() -> Self {
        let mut rng = Rng(0x5eed);
        let tenants = ["acme", "globex", "initech", "umbrella", "hooli"]
            .into_iter()
            .map(|name| (rng.uuid_v4(), name))
            .collect();
        Shop {
            rng,
            tenants,
            live: Vec::new(),
            clock_ms: pulsewatch::now_ms(),
            next_order: 1,
        }
    }

    fn change(&mut self) -> Change {
        self.clock_ms += 1 + self.rng.below(40);
        let roll = self.rng.below(100);
        let (kind, entity, tenant, version, order) = if self.live.len() < 20 || roll < 25 {
            let tenant = self.rng.below(self.tenants.len() as u64) as usize;
            let entity = self.rng.uuid_v4();
            let order = self.next_order;
            self.next_order += 1;
            self.live.push((entity, tenant, 1, order));
            (ChangeKind::Created, entity, tenant, 1, order)
        } else {
            let i = self.rng.below(self.live.len() as u64) as usize;
            let kind = match roll {
                25..=84 => ChangeKind::Updated,
                85..=92 => ChangeKind::Archived,
                _ => ChangeKind::Deleted,
            };
            self.live[i].2 += 1;
            let (entity, tenant, version, order) = self.live[i];
            if kind != ChangeKind::Updated {
                self.live.swap_remove(i);
            }
            (kind, entity, tenant, version, order)
        };
        let status = ["pending", "paid", "packed", "shipped"][self.rng.below(4) as usize];
        let payload = format!(
            r#"{{"order":"ord-{order}","status":"{status}","amount_cents":{},"version":{version}}}"#,
            100 + self.rng.below(50_000)
        );
        let (collective, _) = self.tenants[tenant];
        Change::new(kind, entity, collective)
            .at(self.clock_ms)
            .with_payload(payload)
    }

    fn changes(&mut self, n: u32) -> Vec<Change> {
        (0..n).map(|_| self.change()).collect()
    }
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    // A stop signal stops the plugins, and the writer after its transaction: the demo's
    // database is never left needing a repair.
    let mut options = RunOptions::default();
    let caught = signals::stop_on_signals(&options.stop, options.grace)?;
    let stopped = || caught.signal().map(signals::exit_code);
    let kept = safety::demo_dir(&dir)?;
    let db = dir.join("events.redb");
    let state = dir.join("state");
    let home = Home::under(&state);
    for (name, _, _) in PLUGINS {
        // An earlier demo's records of its own plugins.
        let _ = home.release(name);
        let _ = home.drop_slot(name);
    }
    let log = Log::create(&db)?;
    let mut shop = Shop::new();

    out!(
        "== 1. A writer records {} order changes in {}",
        args.events,
        db.display()
    )?;
    if !kept.is_empty() {
        let names: Vec<String> = kept.iter().map(|p| p.display().to_string()).collect();
        out!("   (kept, as no demo wrote them: {})", names.join(", "))?;
    }
    let started = Instant::now();
    let head = log.append_batch(&shop.changes(args.events))?;
    safety::demo_wrote(&dir, head)?;
    out!(
        "   head is now seq {head} ({} ms, one transaction)",
        started.elapsed().as_millis()
    )?;
    for (id, name) in &shop.tenants {
        out!(
            "   collective {} is tenant {name}",
            uuid::Uuid::from_u128(*id)
        )?;
    }
    if let Some(code) = stopped() {
        return Ok(code);
    }

    // The example plugins, embedded in this binary, as files a user can run again, and the
    // manifest the demo runs them from.
    let plugins_dir = dir.join("plugins");
    std::fs::create_dir_all(&plugins_dir)
        .with_context(|| format!("cannot create {}", plugins_dir.display()))?;
    for (name, bytes) in COMPONENTS {
        let path = plugins_dir.join(format!("{name}.wasm"));
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let receiver = Receiver::start(DEMO_SECRET)?;
    let mut manifest_text = String::from(MANIFEST_HEADER);
    for (name, component, extra) in PLUGINS {
        let (_, bytes) = COMPONENTS
            .iter()
            .find(|(c, _)| *c == component)
            .expect("every demo plugin's component is embedded");
        manifest_text += &format!(
            "\n[[plugin]]\nname = \"{name}\"\ncomponent = \"plugins/{component}.wasm\"\nsha256 = \"{}\"\n{}",
            sha256_hex(bytes),
            extra
                .replace("{receiver}", &receiver.addr.to_string())
                .replace("{secret}", DEMO_SECRET)
        );
    }
    let manifest_path = dir.join("plugins.toml");
    std::fs::write(&manifest_path, &manifest_text)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    let specs = manifest::load(&manifest_path, &state)?;

    out!(
        "\n== 2. Five sandboxed plugins, each in a worker process, read from their own cursors, until caught up:\n   \
         kind-counts and filter-jsonl read the orders; tenant-totals derives each tenant's running totals into\n   \
         totals.redb, exactly once, and totals-counts reads that; webhook POSTs deleted orders to a receiver\n   \
         this demo runs on http://{} (signed, with idempotency keys)",
        receiver.addr
    )?;
    let started = Instant::now();
    let outcomes = supervise(&specs, &db, &options, &home, None, false)?;
    out!(
        "   ({} ms, compile included)",
        started.elapsed().as_millis()
    )?;
    if report(&outcomes, &options, true) != ExitCode::SUCCESS {
        return Ok(ExitCode::FAILURE);
    }
    if let Some(code) = stopped() {
        return Ok(code);
    }

    out!("\n== 3. Live: plugins follow the feed while the writer appends 4 x 500 more")?;
    options.follow = true;
    let outcomes = std::thread::scope(|scope| {
        let plugins_done = scope.spawn(|| supervise(&specs, &db, &options, &home, None, false));
        let written = (|| -> anyhow::Result<u64> {
            let mut head = 0;
            for _ in 0..4 {
                std::thread::sleep(Duration::from_millis(150));
                if options.stop.is_stopped() {
                    break;
                }
                head = log.append_batch(&shop.changes(500))?;
                safety::demo_wrote(&dir, head)?;
                out!("   writer: head is now seq {head}")?;
            }
            // Let the plugins catch up (a failed one never will: give up after a while), then
            // ask them to commit and stop.
            let deadline = Instant::now() + Duration::from_secs(30);
            let caught_up = || {
                specs
                    .iter()
                    .all(|s| options.progress.cursor(&s.name).is_some_and(|c| c >= head))
            };
            while !caught_up()
                && Instant::now() < deadline
                && !plugins_done.is_finished()
                && !options.stop.is_stopped()
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(head)
        })();
        options.stop.stop();
        let outcomes = plugins_done
            .join()
            .expect("the supervisor thread does not panic");
        written.and(outcomes)
    })?;
    if report(&outcomes, &options, true) != ExitCode::SUCCESS {
        return Ok(ExitCode::FAILURE);
    }
    if let Some(code) = stopped() {
        return Ok(code);
    }

    let totals = Log::open_read_only(dir.join("totals.redb"))?;
    let head = totals.head()?;
    out!(
        "\n== 4. The pipeline: totals.redb holds {head} derived events, one per order change; the last, with where it came from:"
    )?;
    if head > 0 {
        let mut line = Vec::new();
        let last = totals.poll(head - 1, 1)?.events.remove(0);
        let origin = totals.origins(head, head)?.pop().map(|(_, o)| o);
        pulsewatch::jsonl::write_event(&mut line, &last, origin.as_ref())?;
        out!("   {}", String::from_utf8_lossy(&line).trim_end())?;
    }
    let seen = receiver.seen();
    out!(
        "   The webhook receiver got {} deliveries with {} distinct webhook-ids; {} signatures did not check out.",
        seen.requests,
        seen.ids.len(),
        seen.bad_signatures
    )?;
    if let Some(last) = &seen.last {
        out!("   The last: {last}")?;
    }

    let matches = state.join("filter-jsonl/matches.jsonl");
    let text = std::fs::read_to_string(&matches).unwrap_or_default();
    out!(
        "\n== 5. What filter-jsonl wrote to its /state ({}):",
        matches.display()
    )?;
    for line in text.lines().take(3) {
        out!("   {line}")?;
    }
    out!("   ... {} lines in all", text.lines().count())?;
    // The path this binary was run from, so the hints work before `pulsewatch` is on PATH.
    let me =
        std::env::current_exe().map_or_else(|_| "pulsewatch".into(), |p| p.display().to_string());
    out!("\nEach plugin resumed from its own committed cursor in phase 3. Try:")?;
    out!(
        "   (the webhook's receiver ran inside this demo: a run from the manifest retries it, then fails)"
    )?;
    out!(
        "   {me} tail --db {} --since {}",
        db.display(),
        log.head()?.saturating_sub(3)
    )?;
    out!(
        "   {me} run --db {} --arg filter-jsonl=kind=archived {}",
        db.display(),
        plugins_dir.join("filter-jsonl.wasm").display()
    )?;
    out!(
        "   {me} run --follow --manifest {} --db {} --state-dir {}",
        manifest_path.display(),
        db.display(),
        state.display()
    )?;
    out!(
        "   {me} tail --db {} --since {}    # derived events, with their origin and id",
        dir.join("totals.redb").display(),
        head.saturating_sub(3)
    )?;
    out!(
        "   {me} status --db {} --state-dir {}    # from another terminal",
        db.display(),
        state.display()
    )?;
    Ok(ExitCode::SUCCESS)
}
