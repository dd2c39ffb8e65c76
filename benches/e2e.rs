//! The end-to-end performance harness of the performance issue: one run, one table.
//!
//!     scripts/bench.sh                 # starts a local broker, builds, runs this
//!     KAFKA_BOOTSTRAP=host:9092 cargo bench --bench e2e
//!
//! What it does, in order, all against the same broker and the same topic:
//!
//! 1. generates `VIGIE_BENCH_ARTICLES` (100,000) articles of about 3 KB (French and
//!    English, some rule hits) and publishes them to a fresh topic of 4 partitions;
//!    writes rule sets of 10, 1,000 and 10,000 keyword rules (`VIGIE_BENCH_RULES`);
//! 2. I/O ceiling: one bare rdkafka consumer that only reads the topic;
//! 3. compute ceiling: one bare consumer per core, each running a single Aho-Corasick DFA
//!    of all the rule set's keywords over the raw payload bytes (no JSON, no normalization,
//!    no rule logic); and the same with as many word-like made-up keywords
//!    (`common::word_like`), whose automaton text walks into as real keywords';
//! 4. a Python consumer (confluent-kafka, JSON parse, tokenize, set lookups), when the
//!    project's venv has confluent-kafka;
//! 5. `vigie run` from the earliest offset with each rule set and the full gazetteer:
//!    articles per second from the first batch taken in (`vigie_batches_total` above
//!    zero) to the last article reported processed (`vigie_articles_processed_total`),
//!    every article counted; CPU used (cores), and the whole machine's over the
//!    same span (with a local broker, whether any core was left idle); peak RSS; time from
//!    spawn to `/healthz` answering (startup) and to `/readyz` (partitions assigned);
//! 6. latency under steady load: the time from producing an article that starts an alert
//!    to the webhook receiver getting it, over `VIGIE_BENCH_TRIALS` (100) trials while a
//!    background producer publishes `VIGIE_BENCH_LOAD` (500) articles a second.
//!
//! Steps 2 to 5 run in `VIGIE_BENCH_ROUNDS` (3) rounds, each measuring every rate once;
//! the table gives medians, and each ratio to the Python consumer or the compute ceiling
//! is taken within a round, then its median and range over the rounds printed.
//!
//! With `VIGIE_BENCH_AB=old,new` (two vigie binaries) it does only 1 and then, per rule
//! set, `VIGIE_BENCH_REPEAT` (3) alternated runs of each build, and prints rate, cores and
//! CPU seconds per run: how docs/BENCHMARKS.md measures one change on a noisy machine.
//!
//! Rates are from the first consumed article to the last, each figure's ratio to the
//! ceilings is printed beside it; ratios within one run are what docs/BENCHMARKS.md quotes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aho_corasick::{AhoCorasick, AhoCorasickKind};
use chrono::Utc;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

mod common;

const PARTITIONS: i32 = 4;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        Utc::now().timestamp_millis()
    )
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument that is not ours means another
    // bench target was asked for.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a != "e2e")
    {
        return;
    }
    let brokers = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let n: usize = env_or("VIGIE_BENCH_ARTICLES", 100_000);
    let trials: usize = env_or("VIGIE_BENCH_TRIALS", 100);
    let load: u64 = env_or("VIGIE_BENCH_LOAD", 500);
    let rule_counts: Vec<usize> = std::env::var("VIGIE_BENCH_RULES")
        .unwrap_or_else(|_| "10,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    if std::env::var_os("VIGIE_BENCH_KEEP").is_some() {
        eprintln!("keeping configs and logs in {}", work.path().display());
    }
    let mut table = Table::default();

    // 1. Articles and rule sets.
    eprintln!("generating {n} articles");
    let articles = common::corpus_until(n, Utc::now());
    assert_eq!(articles.len(), n, "the generator made fewer articles");
    let bytes: usize = articles.iter().map(Vec::len).sum();
    let topic = unique("bench");
    rt.block_on(create_topic(&brokers, &topic, PARTITIONS));
    let started = Instant::now();
    publish(&brokers, &topic, &articles);
    let publish_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "published {n} articles ({:.1} MB) in {publish_secs:.1} s",
        bytes as f64 / 1e6
    );
    table.note(format!(
        "{n} articles, {:.0} bytes each on average, {PARTITIONS} partitions; published in {publish_secs:.1} s",
        bytes as f64 / n as f64
    ));
    let rule_sets: Vec<(usize, String, Vec<String>)> = rule_counts
        .iter()
        .map(|&k| {
            let (toml, words) = common::rules_toml(k);
            (k, toml, words)
        })
        .collect();

    if let Ok(ab) = std::env::var("VIGIE_BENCH_AB") {
        let bins: Vec<PathBuf> = ab.split(',').map(PathBuf::from).collect();
        let repeat: usize = env_or("VIGIE_BENCH_REPEAT", 3);
        println!("A/B: {n} articles; each row one `vigie run` from the earliest offset");
        println!("| rules | build | run | articles/s | cores | machine cores | CPU s |");
        println!("|---|---|---|---:|---:|---:|---:|");
        for (k, toml, _) in &rule_sets {
            for run in 1..=repeat {
                for bin in &bins {
                    let dir = work.path().join(format!("ab-{k}-{run}-{}", unique("v")));
                    let mut cfg = VigieConfig::write(&dir, &brokers, &topic, toml, "");
                    cfg.bin = Some(bin.clone());
                    let f = cfg.run_to_end(n, &rt);
                    println!(
                        "| {k} | {} | {run} | {:.0} | {:.2} | {:.2} | {:.1} |",
                        bin.display(),
                        f.rate,
                        f.cores,
                        f.machine_cores,
                        f.cores * n as f64 / f.rate
                    );
                }
            }
        }
        if std::env::var_os("VIGIE_BENCH_KEEP").is_some() {
            eprintln!("topic {topic}");
            let _ = work.keep();
        }
        return;
    }

    // 2–5, in `VIGIE_BENCH_ROUNDS` (3) rounds: each round measures every rate once, in
    // the same order, and the table gives each rate's median over the rounds. The machine
    // is noisy (a Python run 8,051/s in one run, 7,771/s in the next); a ratio of two
    // rates taken minutes apart moved with it. Taken in the same round, the two rates
    // share the machine's state, and the median of the rounds' ratios is what the table
    // quotes, with their range.
    let rounds: usize = env_or::<usize>("VIGIE_BENCH_ROUNDS", 3).max(1);
    let python_set = rule_sets
        .iter()
        .find(|(k, _, _)| *k == 1000)
        .or(rule_sets.last())
        .map(|(k, _, words)| (*k, words.clone()));
    let automata: Vec<(usize, AhoCorasick, AhoCorasick, usize)> = rule_sets
        .iter()
        .map(|(k, _, words)| {
            let build = |w: &[String]| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .kind(Some(AhoCorasickKind::DFA))
                    .build(w)
                    .unwrap()
            };
            // The same number of word-like keywords (see `common::word_like`): what the
            // ceiling is when the keywords look like a real newsroom's.
            (
                *k,
                build(words),
                build(&common::word_like(words.len())),
                words.len(),
            )
        })
        .collect();
    let mut io = Vec::new();
    let mut compute: HashMap<usize, Vec<f64>> = HashMap::new();
    let mut compute_like: HashMap<usize, Vec<f64>> = HashMap::new();
    let mut python: Vec<f64> = Vec::new();
    let mut runs: HashMap<usize, Vec<RunFigures>> = HashMap::new();
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        // 2. I/O ceiling.
        io.push(consume_all(&brokers, &topic, n, 1, |_| 0));
        // 3. Compute ceilings, one per rule set.
        for (k, ac, like, _) in &automata {
            let rate = consume_all(&brokers, &topic, n, 2, |p| ac.find_iter(p).count());
            compute.entry(*k).or_default().push(rate);
            let rate = consume_all(&brokers, &topic, n, 2, |p| like.find_iter(p).count());
            compute_like.entry(*k).or_default().push(rate);
        }
        // 4. A competent Python consumer, on the 1,000-rule keywords (or the largest set).
        if let Some((_, words)) = &python_set {
            if let Some(rate) = python_consumer(&brokers, &topic, n, words, work.path()) {
                python.push(rate);
            }
        }
        // 5. vigie end to end, each run on a fresh state file and consumer group.
        for (k, toml, _) in &rule_sets {
            let dir = work.path().join(format!("vigie-{k}-{round}"));
            let cfg = VigieConfig::write(&dir, &brokers, &topic, toml, "");
            let run = cfg.run_to_end(n, &rt);
            eprintln!(
                "vigie, {k} rules: {:.0} articles/s, {:.2} cores",
                run.rate, run.cores
            );
            runs.entry(*k).or_default().push(run);
        }
    }
    let spread = |v: &[f64]| {
        let (lo, hi) = min_max(v);
        format!("{lo:.0}–{hi:.0}")
    };
    table.row("I/O ceiling: bare consumer, 1 thread", median(&io), None);
    table.note(format!("I/O ceiling over {rounds} rounds: {}", spread(&io)));
    let compute_median: HashMap<usize, f64> =
        compute.iter().map(|(k, v)| (*k, median(v))).collect();
    for (k, _, _, words) in &automata {
        table.row(
            &format!("compute ceiling: 2 consumers, one AC DFA of {words} keywords ({k} rules)"),
            compute_median[k],
            None,
        );
        table.row(
            &format!(
                "compute ceiling, word-like keywords: 2 consumers, one AC DFA of {words} made-up words"
            ),
            median(&compute_like[k]),
            None,
        );
        table.note(format!(
            "compute ceiling at {k} rules over {rounds} rounds: {}",
            spread(&compute[k])
        ));
    }
    let python_median = (!python.is_empty()).then(|| median(&python));
    if let (Some(p), Some((k, _))) = (python_median, &python_set) {
        table.row(
            &format!("Python consumer (confluent-kafka, json, tokenize, set lookups; {k} rules)"),
            p,
            compute_median.get(k).copied(),
        );
        table.note(format!(
            "Python consumer over {} rounds: {}",
            python.len(),
            spread(&python)
        ));
    }
    let mut peak_rss = Vec::new();
    for (k, _, _) in &rule_sets {
        let figures = &runs[k];
        let rates: Vec<f64> = figures.iter().map(|f| f.rate).collect();
        let cores: Vec<f64> = figures.iter().map(|f| f.cores).collect();
        let machine: Vec<f64> = figures.iter().map(|f| f.machine_cores).collect();
        table.row(
            &format!(
                "vigie run, {k} rules (full gazetteer, entities, counting, state): {:.2} cores busy, machine {:.2}",
                median(&cores),
                median(&machine)
            ),
            median(&rates),
            compute_median.get(k).copied(),
        );
        table.note(format!(
            "vigie at {k} rules over {rounds} rounds: {}",
            spread(&rates)
        ));
        // Each round's vigie against the same round's ceiling and Python consumer.
        let of_compute: Vec<f64> = rates.iter().zip(&compute[k]).map(|(v, c)| v / c).collect();
        let (lo, hi) = min_max(&of_compute);
        table.ratio_note(format!(
            "vigie at {k} rules / compute ceiling, per round: median {:.2} (range {lo:.2}–{hi:.2})",
            median(&of_compute)
        ));
        if python.len() == rates.len() {
            let of_python: Vec<f64> = rates.iter().zip(&python).map(|(v, p)| v / p).collect();
            let (lo, hi) = min_max(&of_python);
            table.ratio_note(format!(
                "vigie at {k} rules / Python consumer, per round: median {:.2}× (range {lo:.2}–{hi:.2}×)",
                median(&of_python)
            ));
        }
        let rss: Vec<f64> = figures.iter().map(|f| f.peak_rss_mb).collect();
        let startup: Vec<f64> = figures.iter().map(|f| f.startup.as_secs_f64()).collect();
        let ready: Vec<f64> = figures.iter().map(|f| f.ready.as_secs_f64()).collect();
        peak_rss.push((*k, rss, median(&startup), median(&ready)));
    }
    for (k, rss, startup, ready) in &peak_rss {
        table.note(format!(
            "{k} rules: peak RSS {:.0} MB (largest of {rounds} runs; median {:.0}); startup to /healthz {startup:.2} s; to /readyz (partitions assigned) {ready:.2} s (medians)",
            min_max(rss).1,
            median(rss)
        ));
    }

    // 6. Latency under steady load.
    if trials > 0 {
        let (p50, p99, max, got) = latency(&brokers, &rt, work.path(), trials, load);
        table.note(format!(
            "produce-to-webhook latency over {got} of {trials} trials at {load} articles/s background load: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            p50, p99, max
        ));
    }
    table.print();
    if std::env::var_os("VIGIE_BENCH_KEEP").is_some() {
        let _ = work.keep();
    }
}

/// The lines of the final table.
#[derive(Default)]
struct Table {
    rows: Vec<(String, f64, Option<f64>)>,
    notes: Vec<String>,
    ratios: Vec<String>,
    io: Option<f64>,
}

impl Table {
    fn row(&mut self, what: &str, rate: f64, compute: Option<f64>) {
        if self.io.is_none() {
            self.io = Some(rate);
        }
        eprintln!("{what}: {rate:.0} articles/s");
        self.rows.push((what.to_string(), rate, compute));
    }

    fn note(&mut self, s: String) {
        eprintln!("{s}");
        self.notes.push(s);
    }

    fn ratio_note(&mut self, s: String) {
        eprintln!("{s}");
        self.ratios.push(s);
    }

    fn print(&self) {
        let io = self.io.unwrap_or(f64::NAN);
        println!();
        println!("| measurement | articles/s | / I/O ceiling | / compute ceiling |");
        println!("|---|---|---|---|");
        for (what, rate, compute) in &self.rows {
            let c = compute.map_or(String::new(), |c| format!("{:.2}", rate / c));
            println!("| {what} | {rate:.0} | {:.3} | {c} |", rate / io);
        }
        println!();
        for s in self.ratios.iter().chain(&self.notes) {
            println!("* {s}");
        }
    }
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let t = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let r = admin
        .create_topics([&t], &AdminOptions::new())
        .await
        .expect("create topic");
    for x in r {
        x.expect("topic created");
    }
}

/// Publishes every payload, spread evenly over the partitions, and waits for the acks.
fn publish(brokers: &str, topic: &str, payloads: &[Vec<u8>]) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .expect("producer");
    for (i, payload) in payloads.iter().enumerate() {
        let mut rec = BaseRecord::<(), [u8]>::to(topic)
            .payload(payload.as_slice())
            .partition(i as i32 % PARTITIONS);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120))
        .expect("all articles acknowledged");
}

/// Reads the whole topic with `threads` bare consumers (partitions split between them),
/// calling `work` on every payload; returns articles per second from the first record to
/// the last.
fn consume_all(
    brokers: &str,
    topic: &str,
    n: usize,
    threads: usize,
    work: impl Fn(&[u8]) -> usize + Sync,
) -> f64 {
    let seen = AtomicUsize::new(0);
    let first: Mutex<Option<Instant>> = Mutex::new(None);
    let last: Mutex<Option<Instant>> = Mutex::new(None);
    let sink = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (seen, first, last, sink, work) = (&seen, &first, &last, &sink, &work);
            s.spawn(move || {
                let c: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", brokers)
                    .set("group.id", unique("bench-ceiling"))
                    .set("enable.auto.commit", "false")
                    .create()
                    .expect("consumer");
                let mut tpl = TopicPartitionList::new();
                for p in (0..PARTITIONS).filter(|p| *p as usize % threads == t) {
                    tpl.add_partition_offset(topic, p, Offset::Beginning)
                        .unwrap();
                }
                c.assign(&tpl).unwrap();
                let mut local = 0usize;
                let mut quiet_since = Instant::now();
                while seen.load(Ordering::Relaxed) < n {
                    match c.poll(Duration::from_millis(100)) {
                        Some(Ok(m)) => {
                            first.lock().unwrap().get_or_insert_with(Instant::now);
                            local += work(m.payload().unwrap_or_default());
                            if seen.fetch_add(1, Ordering::Relaxed) + 1 == n {
                                *last.lock().unwrap() = Some(Instant::now());
                            }
                            quiet_since = Instant::now();
                        }
                        Some(Err(e)) => panic!("consume: {e}"),
                        None if quiet_since.elapsed() > Duration::from_secs(20) => break,
                        None => {}
                    }
                }
                sink.fetch_add(local, Ordering::Relaxed);
            });
        }
    });
    let got = seen.load(Ordering::Relaxed);
    assert!(got >= n, "read {got} of {n} articles");
    std::hint::black_box(sink.load(Ordering::Relaxed));
    let (f, l) = (first.into_inner().unwrap(), last.into_inner().unwrap());
    n as f64 / l.unwrap().duration_since(f.unwrap()).as_secs_f64()
}

fn python_consumer(
    brokers: &str,
    topic: &str,
    n: usize,
    words: &[String],
    work: &Path,
) -> Option<f64> {
    let python = std::env::var("VIGIE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("var/venv/bin/python"));
    let kw = work.join("python-keywords.txt");
    std::fs::write(&kw, words.join("\n")).unwrap();
    let out = Command::new(&python)
        .arg(repo().join("scripts/bench_consumer.py"))
        .args(["--brokers", brokers, "--topic", topic, "--expect"])
        .arg(n.to_string())
        .arg("--keywords")
        .arg(&kw)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            v["rate"].as_f64()
        }
        Ok(o) => {
            eprintln!(
                "Python consumer skipped: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("Python consumer skipped: {} ({e})", python.display());
            None
        }
    }
}

/// A config directory for one `vigie run`.
struct VigieConfig {
    dir: PathBuf,
    http: u16,
    /// The build to run; `VIGIE_BENCH_BIN` or this bench's own when `None`.
    bin: Option<PathBuf>,
}

struct RunFigures {
    rate: f64,
    cores: f64,
    /// Cores busy on the whole machine over the same span, vigie's included: with the
    /// broker on the same machine, how much of it vigie and its broker leave idle.
    machine_cores: f64,
    peak_rss_mb: f64,
    startup: Duration,
    ready: Duration,
}

/// What a vigie run is measured between: read when it has taken in its first batch and
/// when it reports its last article processed.
struct Mark {
    at: Instant,
    /// Articles reported processed.
    done: u64,
    /// vigie's CPU seconds so far.
    cpu: f64,
    /// The whole machine's busy CPU seconds so far ([`machine_cpu_seconds`]).
    machine_cpu: f64,
}

impl Mark {
    fn take(pid: u32, done: u64) -> Mark {
        Mark {
            at: Instant::now(),
            done,
            cpu: cpu_seconds(pid),
            machine_cpu: machine_cpu_seconds(),
        }
    }
}

impl VigieConfig {
    fn write(dir: &Path, brokers: &str, topic: &str, rules: &str, extra: &str) -> VigieConfig {
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::create_dir_all(dir.join("entities")).unwrap();
        std::fs::copy(
            repo().join("config/entities/people.toml"),
            dir.join("entities/people.toml"),
        )
        .unwrap();
        std::fs::write(dir.join("rules/bench.toml"), rules).unwrap();
        let http = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let toml = format!(
            "[kafka]\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\ngroup_id = \"{group}\"\nauto_offset_reset = \"earliest\"\n\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n{props}\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n[state]\npath = \"{state}\"\n\n{extra}\n",
            group = unique("bench-vigie"),
            // VIGIE_BENCH_PROPS: extra consumer properties (`"key" = "value"` lines).
            props = std::env::var("VIGIE_BENCH_PROPS").unwrap_or_default(),
            state = dir.join("state/vigie.db").display(),
        );
        std::fs::write(dir.join("vigie.toml"), toml).unwrap();
        VigieConfig {
            dir: dir.to_path_buf(),
            http,
            bin: None,
        }
    }

    fn spawn(&self) -> Child {
        let log = std::fs::File::create(self.dir.join("vigie.log")).unwrap();
        // VIGIE_BENCH_BIN: another build of vigie, to compare two in one session.
        let bin = (self.bin.clone())
            .or_else(|| std::env::var_os("VIGIE_BENCH_BIN").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vigie")));
        Command::new(bin)
            .args(["run", "--config"])
            .arg(&self.dir)
            .env(
                "VIGIE_LOG",
                std::env::var("VIGIE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn vigie")
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    /// Waits until `path` answers 200; returns the time since `since`.
    async fn wait_ok(&self, path: &str, since: Instant, child: &mut Child) -> Duration {
        let client = reqwest::Client::new();
        loop {
            if let Ok(r) = client.get(self.url(path)).send().await {
                if r.status().is_success() {
                    return since.elapsed();
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("vigie exited ({st}); log in {}", self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// (batches taken in, articles processed), from `/metrics`.
    async fn progress(&self, client: &reqwest::Client) -> Option<(u64, u64)> {
        let text = client
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let value = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        Some((
            value("vigie_batches_total"),
            value("vigie_articles_processed_total"),
        ))
    }

    /// Starts vigie on a fresh state, waits until it has processed `n` articles, stops it.
    fn run_to_end(&self, n: usize, rt: &tokio::runtime::Runtime) -> RunFigures {
        let spawned = Instant::now();
        let mut child = self.spawn();
        let pid = child.id();
        let figures = rt.block_on(async {
            let startup = self.wait_ok("/healthz", spawned, &mut child).await;
            let ready = self.wait_ok("/readyz", spawned, &mut child).await;
            let client = reqwest::Client::new();
            // The rate runs from the first batch taken in to the last article reported,
            // over all `n` articles, as the Python consumer is timed from its first record
            // to its last. (Until the night of 2026-12-06 it ran from the first report of
            // processed articles: that report comes with the first state write, by which
            // time a backlog has applied batches it has not reported yet, so the rate
            // counted articles processed before its clock started.) Polled every 5 ms
            // until the first batch, so the clock starts late by that at most.
            let mut first: Option<Mark> = None;
            let deadline = Instant::now() + Duration::from_secs(900);
            let last = loop {
                let (batches, done) = self.progress(&client).await.unwrap_or((0, 0));
                if batches > 0 && first.is_none() {
                    first = Some(Mark::take(pid, 0));
                }
                if done >= n as u64 {
                    break Mark::take(pid, done);
                }
                assert!(Instant::now() < deadline, "vigie did not finish in time");
                if let Ok(Some(st)) = child.try_wait() {
                    panic!("vigie exited ({st}); log in {}", self.dir.display());
                }
                let pause = if first.is_none() { 5 } else { 20 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            };
            let first = first.unwrap();
            let secs = last.at.duration_since(first.at).as_secs_f64();
            RunFigures {
                rate: last.done.saturating_sub(first.done) as f64 / secs,
                cores: (last.cpu - first.cpu) / secs,
                machine_cores: (last.machine_cpu - first.machine_cpu) / secs,
                peak_rss_mb: peak_rss_mb(pid),
                startup,
                ready,
            }
        });
        stop(child);
        figures
    }
}

/// The smallest and largest of `v`.
fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

/// The median of `v` (the mean of the middle two for an even count); NaN when empty.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// User + system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / clock_ticks_per_second()
}

/// The unit of the CPU times in /proc.
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf takes an integer and reads a system setting.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Busy CPU seconds of every CPU together since boot, from the first line of /proc/stat
/// (user, nice, system, idle, iowait, irq, softirq, steal; the guest times after them are
/// already in user and nice): user, nice, system, irq and softirq. Idle, waiting on I/O and
/// time the hypervisor gave to others (steal) are not busy.
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6].iter().filter_map(|&i| ticks.get(i)).sum();
    busy as f64 / clock_ticks_per_second()
}

fn peak_rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Produce-to-webhook latency: `trials` rules, each starting an alert at its first story,
/// while a background producer keeps the feed busy. Returns p50, p99, max (ms) and the
/// number of trials whose alert arrived.
fn latency(
    brokers: &str,
    rt: &tokio::runtime::Runtime,
    work: &Path,
    trials: usize,
    load: u64,
) -> (f64, f64, f64, usize) {
    let topic = unique("bench-latency");
    rt.block_on(create_topic(brokers, &topic, PARTITIONS));
    // The receiver: rule id → arrival time.
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let port = rt.block_on(receiver(arrivals.clone()));
    let (mut rules, _) = common::rules_toml(10);
    for k in 0..trials {
        rules.push_str(&format!(
            "[[rule]]\nid = \"lat{k}\"\nkeywords = [\"zqlat{k}q\"]\nnotify = [\"hook\"]\n\n[rule.spike]\nkind = \"threshold\"\nthreshold = 1\nmin_count = 1\n\n"
        ));
    }
    let extra =
        format!("[channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\n");
    let cfg = VigieConfig::write(&work.join("vigie-latency"), brokers, &topic, &rules, &extra);
    let mut child = cfg.spawn();
    rt.block_on(cfg.wait_ok("/readyz", Instant::now(), &mut child));

    // Background load: current articles, so the event-time clock follows the wall clock.
    let background = Arc::new(common::corpus(2_000));
    let stop_load = Arc::new(AtomicBool::new(false));
    let producer: Arc<ThreadedProducer<DefaultProducerContext>> = Arc::new(
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "0")
            .create()
            .expect("producer"),
    );
    let trial_producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let loader = {
        let (stop_load, producer, topic) = (stop_load.clone(), producer.clone(), topic.clone());
        let background = background.clone();
        std::thread::spawn(move || {
            let every = Duration::from_secs_f64(1.0 / load.max(1) as f64);
            let mut next = Instant::now();
            let mut i = 0usize;
            while !stop_load.load(Ordering::Relaxed) {
                let mut v: serde_json::Value =
                    serde_json::from_slice(&background[i % background.len()]).unwrap();
                v["published_at"] = Utc::now().to_rfc3339().into();
                v["id"] = format!("load-{i}").into();
                let bytes = serde_json::to_vec(&v).unwrap();
                let rec = BaseRecord::<(), [u8]>::to(&topic)
                    .payload(&bytes)
                    .partition(i as i32 % PARTITIONS);
                let _ = producer.send(rec);
                i += 1;
                next += every;
                if let Some(d) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_secs(3));

    let mut samples = Vec::new();
    for k in 0..trials {
        // A story of its own (a copy of an earlier trial, or of a background article,
        // would count as the same story and rightly not start a new alert).
        let words: Vec<String> = (0..60).map(|j| format!("w{k}x{j}")).collect();
        let body = serde_json::json!({
            "id": format!("trial-{k}"),
            "title": format!("Breaking: zqlat{k}q reported"),
            "body": words.join(" "),
            "source": "bench.example",
            "url": format!("https://bench.example/trial/{k}"),
            "published_at": Utc::now().to_rfc3339(),
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        let sent = Instant::now();
        let rec = BaseRecord::<(), [u8]>::to(&topic)
            .payload(&bytes)
            .partition(k as i32 % PARTITIONS);
        trial_producer.send(rec).map_err(|(e, _)| e).unwrap();
        // Its own producer, so the flush waits for this article only, not for the
        // background load's backlog.
        if let Err(e) = trial_producer.flush(Duration::from_secs(10)) {
            eprintln!("trial {k}: not acknowledged by the broker within 10 s ({e})");
            continue;
        }
        let id = format!("lat{k}");
        let deadline = sent + Duration::from_secs(10);
        loop {
            if let Some(at) = arrivals.lock().unwrap().get(&id) {
                let ms = at.duration_since(sent).as_secs_f64() * 1000.0;
                if ms > 500.0 {
                    eprintln!("trial {k}: {ms:.0} ms");
                }
                samples.push(ms);
                break;
            }
            if Instant::now() > deadline {
                eprintln!("trial {k}: no alert within 10 s");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop_load.store(true, Ordering::Relaxed);
    loader.join().unwrap();
    stop(child);
    samples.sort_by(f64::total_cmp);
    let q = |p: f64| {
        if samples.is_empty() {
            f64::NAN
        } else {
            samples[((samples.len() - 1) as f64 * p).round() as usize]
        }
    };
    (q(0.5), q(0.99), q(1.0), samples.len())
}

/// A webhook receiver on 127.0.0.1:0 that notes when each rule's first event arrives.
async fn receiver(arrivals: Arc<Mutex<HashMap<String, Instant>>>) -> u16 {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let arrivals = arrivals.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if let Some(rule) = v["rule"].as_str() {
                        arrivals
                            .lock()
                            .unwrap()
                            .entry(rule.to_string())
                            .or_insert(at);
                    }
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}
