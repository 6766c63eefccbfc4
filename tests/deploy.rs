//! The files of `deploy/` parse, and every flag, environment variable, port
//! and path they give authzd exists in the binary: command lines are parsed
//! by the binary's own clap definition (`authzd::cli::Cli`) and validated by
//! `ServerConfig::from_args`, environment variables are mapped to the `serve`
//! flag that reads them, ports are those the configured listeners use, and
//! the example configuration file's keys are `serve` flags.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use authzd::cli::{Cli, Command};
use authzd::config::ServerConfig;
use clap::{CommandFactory as _, Parser as _};
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Environment variables read by something else than a `serve` flag.
const OTHER_ENV: [&str; 1] = [
    // the log filter (`app::init_tracing`)
    "RUST_LOG",
];

/// `serve`'s environment variables: env → (long flag, takes a value).
fn serve_env() -> BTreeMap<String, (String, bool)> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("serve subcommand");
    serve
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?.to_owned();
            let long = a.get_long()?.to_owned();
            Some((env, (long, a.get_action().takes_values())))
        })
        .collect()
}

/// `serve` flags equivalent to environment settings (unknown variables fail).
fn env_args(what: &str, env: &[(String, String)]) -> Vec<String> {
    let known = serve_env();
    let mut out = Vec::new();
    for (k, v) in env {
        if OTHER_ENV.contains(&k.as_str()) {
            continue;
        }
        let (long, takes) =
            known.get(k).unwrap_or_else(|| panic!("{what}: `{k}` is not an environment variable of `authzd serve`"));
        // Compose interpolation (`${VAR:?message}`) stands for a value given at run time.
        let v = if v.starts_with("${") { "x".to_owned() } else { v.clone() };
        if *takes {
            out.push(format!("--{long}"));
            out.push(v);
        } else if v == "true" || v == "1" {
            out.push(format!("--{long}"));
        }
    }
    out
}

/// Parses `authzd <args>` with the binary's clap definition and validates
/// the server configuration; environment settings are applied as flags.
fn serve_config(what: &str, args: &[String], env: &[(String, String)]) -> ServerConfig {
    let mut argv = vec!["authzd".to_owned()];
    argv.extend(args.iter().cloned());
    argv.extend(env_args(what, env));
    let cli =
        Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{what}: `{}` does not parse:\n{e}", argv.join(" ")));
    let Command::Serve(a) = cli.command else { panic!("{what}: not `authzd serve`: {argv:?}") };
    ServerConfig::from_args(&a).unwrap_or_else(|e| panic!("{what}: invalid configuration: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(|x| x.as_str().map(str::to_owned).unwrap_or_else(|| yaml_scalar(x))).collect())
        .unwrap_or_default()
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

// ------------------------------------------------------------------ Containerfile

/// Instructions of a Containerfile: (keyword, arguments), continuations joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if current.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(cont) = t.strip_suffix('\\') {
            current.push_str(cont);
            current.push(' ');
            continue;
        }
        current.push_str(t);
        let (k, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((k.to_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    assert!(current.is_empty(), "Containerfile ends in a continuation");
    out
}

fn json_array(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("`{s}` is not an exec-form JSON array: {e}"))
}

#[test]
fn containerfile_builds_the_binary_and_runs_it_as_non_root() {
    let ins = instructions(&read("deploy/Containerfile"));
    let known = ["FROM", "WORKDIR", "COPY", "RUN", "USER", "ENV", "EXPOSE", "ENTRYPOINT", "CMD"];
    for (k, _) in &ins {
        assert!(known.contains(&k.as_str()), "unexpected instruction {k}");
    }
    let stages: Vec<usize> = ins.iter().enumerate().filter(|(_, (k, _))| k == "FROM").map(|(i, _)| i).collect();
    assert!(stages.len() >= 2, "multi-stage: a builder and a runtime stage");
    let mut names = BTreeSet::new();
    for &i in &stages[..stages.len() - 1] {
        let parts: Vec<&str> = ins[i].1.split_whitespace().collect();
        assert!(parts.len() == 3 && parts[1].eq_ignore_ascii_case("as"), "builder stages are named: {:?}", ins[i]);
        assert!(parts[0].contains("rust"), "the builder is a Rust image: {}", parts[0]);
        names.insert(parts[2].to_owned());
    }
    let last = *stages.last().unwrap();
    let runtime = &ins[last].1;
    assert!(runtime.contains("distroless") || runtime.contains("slim"), "slim runtime: {runtime}");

    // Build-context copies exist; stage copies name a stage.
    let mut dests = BTreeSet::new();
    for (i, (k, args)) in ins.iter().enumerate() {
        if k != "COPY" {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let from = words.iter().find_map(|w| w.strip_prefix("--from="));
        let paths: Vec<&str> = words.iter().filter(|w| !w.starts_with("--")).copied().collect();
        let (srcs, dest) = paths.split_at(paths.len() - 1);
        match from {
            Some(stage) => assert!(names.contains(stage), "COPY --from={stage}: no such stage"),
            None => {
                for s in srcs {
                    assert!(root().join(s).exists(), "COPY {s}: not in the repository");
                }
            }
        }
        if i > last {
            dests.insert(dest[0].to_owned());
        }
    }
    // The build needs these (include_str!, build.rs, the manifest's bench targets).
    for needed in ["Cargo.toml", "Cargo.lock", "build.rs", "proto", "presets", "examples", "src", "benches"] {
        assert!(
            ins.iter().any(|(k, a)| k == "COPY" && !a.contains("--from") && a.split_whitespace().any(|w| w == needed)),
            "COPY {needed}"
        );
    }
    assert!(ins.iter().any(|(k, a)| k == "RUN" && a.contains("cargo build --release --locked")));

    // Runtime stage: non-root user, the binary as entrypoint.
    let runtime_ins = &ins[last..];
    let user = runtime_ins.iter().rev().find(|(k, _)| k == "USER").map(|(_, u)| u.clone()).expect("USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as root: {user}");
    let entry = json_array(&runtime_ins.iter().find(|(k, _)| k == "ENTRYPOINT").expect("ENTRYPOINT").1);
    assert!(dests.contains(&entry[0]), "the entrypoint {} is copied into the runtime stage", entry[0]);
    let cmd = json_array(&runtime_ins.iter().find(|(k, _)| k == "CMD").expect("CMD").1);

    let mut env = Vec::new();
    for (k, args) in runtime_ins.iter().filter(|(k, _)| k == "ENV") {
        assert_eq!(k, "ENV");
        for kv in args.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("ENV `{kv}`: use KEY=value"));
            env.push((k.to_owned(), v.to_owned()));
        }
    }
    let config = serve_config("Containerfile", &cmd, &env);
    assert!(config.store_url.starts_with("sqlite:///data/"), "the store lives in the writable /data");
    let exposed: BTreeSet<u16> = runtime_ins
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, a)| a.split_whitespace().map(|p| p.parse::<u16>().unwrap()).collect::<Vec<_>>())
        .collect();
    let used: BTreeSet<u16> =
        [Some(config.listen.port()), config.metrics_listen.map(|m| m.port())].into_iter().flatten().collect();
    assert_eq!(exposed, used, "EXPOSE the ports authzd listens on");
    assert!(!config.listen.ip().is_loopback(), "a container listens on all interfaces");
}

// ------------------------------------------------------------------ Kubernetes

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| {
            let mut v: Value = serde::Deserialize::deserialize(d).unwrap();
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

fn env_list(c: &Value) -> (Vec<(String, String)>, BTreeMap<String, Value>) {
    let mut literal = Vec::new();
    let mut from = BTreeMap::new();
    for e in c["env"].as_sequence().cloned().unwrap_or_default() {
        let name = e["name"].as_str().unwrap().to_owned();
        if let Some(v) = e.get("value") {
            literal.push((name, yaml_scalar(v)));
        } else {
            from.insert(name, e["valueFrom"].clone());
        }
    }
    (literal, from)
}

#[test]
fn kubernetes_sidecar_shares_a_socket_and_probes_the_metrics_port() {
    let docs = documents(&read("deploy/kubernetes/sidecar.yaml"));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], Value::Bool(true));
    let init = pod["initContainers"].as_sequence().cloned().unwrap_or_default();
    let containers = pod["containers"].as_sequence().cloned().unwrap_or_default();
    let authzd = init.iter().chain(&containers).find(|c| c["name"] == "authzd").expect("an authzd container").clone();
    let app = containers.iter().find(|c| c["name"] != "authzd").expect("an application container").clone();
    if init.iter().any(|c| c["name"] == "authzd") {
        assert_eq!(authzd["restartPolicy"], "Always", "a native sidecar restarts always");
    }

    let (literal, from) = env_list(&authzd);
    let known = serve_env();
    for name in from.keys() {
        assert!(known.contains_key(name), "`{name}` is not an environment variable of `authzd serve`");
    }
    assert!(from["AUTHZD_STORE"].get("secretKeyRef").is_some(), "the store URL comes from a Secret");
    // The Secret supplies a PostgreSQL URL at run time; stand in for it.
    let mut env = literal.clone();
    env.push(("AUTHZD_STORE".into(), "postgres://authzd:secret@postgres:5432/authzd".into()));
    let config = serve_config("sidecar.yaml authzd", &strings(&authzd["args"]), &env);

    // Probes hit the metrics port, readiness on /readyz, liveness on /healthz.
    let metrics = config.metrics_listen.expect("--metrics-listen").port();
    let port_of = |p: &Value| -> u16 {
        match p {
            Value::Number(n) => u16::try_from(n.as_u64().unwrap()).unwrap(),
            Value::String(name) => {
                let ports = authzd["ports"].as_sequence().unwrap();
                let port =
                    ports.iter().find(|x| x["name"] == name.as_str()).unwrap_or_else(|| panic!("no port `{name}`"));
                u16::try_from(port["containerPort"].as_u64().unwrap()).unwrap()
            }
            other => panic!("probe port {other:?}"),
        }
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/readyz")] {
        let p = &authzd[probe]["httpGet"];
        assert_eq!(p["path"], path, "{probe}");
        assert_eq!(port_of(&p["port"]), metrics, "{probe} on the metrics port");
    }

    // The socket is in an emptyDir that the application mounts too.
    let socket = config.unix_socket.expect("--unix-socket");
    let mount_of = |c: &Value| -> Vec<(String, String)> {
        c["volumeMounts"]
            .as_sequence()
            .map(|m| {
                m.iter()
                    .map(|m| (m["name"].as_str().unwrap().to_owned(), m["mountPath"].as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (volume, dir) = mount_of(&authzd)
        .into_iter()
        .find(|(_, path)| socket.parent() == Some(Path::new(path)))
        .expect("the socket's directory is a volume mount");
    let vol =
        pod["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == volume.as_str()).expect("volume").clone();
    assert!(vol.get("emptyDir").is_some(), "the socket volume is an emptyDir");
    assert!(
        mount_of(&app).iter().any(|(n, p)| *n == volume && *p == dir),
        "the application mounts the socket volume at the same path"
    );
    let (app_env, _) = env_list(&app);
    assert!(app_env.iter().any(|(_, v)| Path::new(v) == socket), "the application is told the socket path");
}

// ------------------------------------------------------------------ compose

#[test]
fn compose_runs_three_replicas_on_one_postgres() {
    let mut doc: Value = serde_yaml_ng::from_str(&read("deploy/compose.yaml")).unwrap();
    doc.apply_merge().unwrap();
    let services = doc["services"].as_mapping().expect("services");
    let postgres =
        services.iter().find(|(_, s)| s["image"].as_str().is_some_and(|i| i.contains("postgres"))).expect("postgres");
    let pg_name = postgres.0.as_str().unwrap();
    let replicas: Vec<(&str, &Value)> = services
        .iter()
        .filter(|(_, s)| s["image"].as_str().is_some_and(|i| i.contains("authzd")))
        .map(|(k, s)| (k.as_str().unwrap(), s))
        .collect();
    assert_eq!(replicas.len(), 3, "three authzd replicas");
    let mut host_ports = BTreeSet::new();
    for (name, s) in replicas {
        let build = &s["build"];
        let context = root().join("deploy").join(build["context"].as_str().unwrap());
        assert!(context.join(build["dockerfile"].as_str().unwrap()).exists(), "{name}: build file");
        assert!(s["depends_on"].get(pg_name).is_some(), "{name} waits for {pg_name}");
        let env: Vec<(String, String)> = s["environment"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str().unwrap().to_owned(), yaml_scalar(v)))
            .collect();
        let config = serve_config(&format!("compose {name}"), &strings(&s["command"]), &env);
        assert!(
            config.store_url.starts_with("postgres://") && config.store_url.contains(&format!("@{pg_name}:5432/")),
            "{name}: the store is the compose PostgreSQL: {}",
            config.store_url
        );
        let listen: BTreeSet<u16> =
            [Some(config.listen.port()), config.metrics_listen.map(|m| m.port())].into_iter().flatten().collect();
        for p in strings(&s["ports"]) {
            let parts: Vec<&str> = p.split(':').collect();
            let container: u16 = parts.last().unwrap().parse().unwrap();
            assert!(listen.contains(&container), "{name}: port {p} maps to nothing authzd listens on ({listen:?})");
            assert!(host_ports.insert(parts[parts.len() - 2].to_owned()), "{name}: host port {p} used twice");
        }
    }
}

// ------------------------------------------------------------------ systemd

/// A unit file: section → (key, value) in order.
fn unit(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut section = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = Some(name.to_owned());
            out.entry(name.to_owned()).or_default();
            continue;
        }
        let (k, v) = t.split_once('=').unwrap_or_else(|| panic!("line {}: `{t}` is not Key=value", n + 1));
        let s = section.clone().unwrap_or_else(|| panic!("line {}: outside a section", n + 1));
        out.entry(s).or_default().push((k.trim().to_owned(), v.trim().to_owned()));
    }
    out
}

#[test]
fn systemd_unit_is_hardened_and_its_command_line_parses() {
    let u = unit(&read("deploy/systemd/authzd.service"));
    assert_eq!(u.keys().cloned().collect::<Vec<_>>(), ["Install", "Service", "Unit"]);
    let directives: [(&str, &[&str]); 3] = [
        ("Unit", &["Description", "Documentation", "After", "Wants", "Requires"]),
        (
            "Service",
            &[
                "Type",
                "ExecStart",
                "Environment",
                "EnvironmentFile",
                "KillSignal",
                "TimeoutStopSec",
                "Restart",
                "RestartSec",
                "LimitNOFILE",
                "DynamicUser",
                "User",
                "Group",
                "StateDirectory",
                "StateDirectoryMode",
                "RuntimeDirectory",
                "RuntimeDirectoryMode",
                "UMask",
                "NoNewPrivileges",
                "CapabilityBoundingSet",
                "AmbientCapabilities",
                "ProtectSystem",
                "ProtectHome",
                "PrivateTmp",
                "PrivateDevices",
                "ProtectKernelTunables",
                "ProtectKernelModules",
                "ProtectKernelLogs",
                "ProtectControlGroups",
                "ProtectClock",
                "ProtectHostname",
                "ProtectProc",
                "RestrictAddressFamilies",
                "RestrictNamespaces",
                "RestrictRealtime",
                "RestrictSUIDSGID",
                "LockPersonality",
                "MemoryDenyWriteExecute",
                "RemoveIPC",
                "SystemCallArchitectures",
                "SystemCallFilter",
                "SystemCallErrorNumber",
            ],
        ),
        ("Install", &["WantedBy"]),
    ];
    for (section, keys) in directives {
        for (k, _) in &u[section] {
            assert!(keys.contains(&k.as_str()), "[{section}] {k}: not a directive this test knows (typo?)");
        }
    }
    let service = &u["Service"];
    let get = |k: &str| service.iter().filter(|(x, _)| x == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictNamespaces", "yes"),
        ("DynamicUser", "yes"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(get(k), [v], "{k}");
    }
    assert!(
        get("RestrictAddressFamilies")[0].split_whitespace().any(|f| f == "AF_UNIX"),
        "the Unix socket needs AF_UNIX"
    );

    let exec: Vec<String> = get("ExecStart")[0].split_whitespace().map(str::to_owned).collect();
    assert_eq!(exec[0], "/usr/local/bin/authzd");
    let env: Vec<(String, String)> = get("Environment")
        .iter()
        .map(|kv| {
            let (k, v) = kv.trim_matches('"').split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let config = serve_config("authzd.service", &exec[1..], &env);
    let state = format!("/var/lib/{}/", get("StateDirectory")[0]);
    assert!(
        config.store_url.trim_start_matches("sqlite://").starts_with(&state),
        "the SQLite file is in StateDirectory"
    );
    let runtime = PathBuf::from(format!("/run/{}", get("RuntimeDirectory")[0]));
    assert_eq!(
        config.unix_socket.as_deref().and_then(Path::parent),
        Some(runtime.as_path()),
        "the socket is in RuntimeDirectory"
    );
    assert!(
        config.listen.ip().is_loopback() && config.metrics_listen.unwrap().ip().is_loopback(),
        "a host service listens on loopback"
    );
}

#[test]
fn every_serve_flag_has_an_environment_variable() {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    for a in serve.get_arguments().filter(|a| a.get_long().is_some() && a.get_id() != "help") {
        assert!(a.get_env().is_some(), "--{} has no environment fallback", a.get_long().unwrap());
    }
    assert!(serve_env().contains_key("AUTHZD_METRICS_LISTEN"));
    assert!(serve_env().contains_key("OTEL_EXPORTER_OTLP_ENDPOINT"));
}

/// `deploy/authzd.yaml`, the example configuration file: every key is a long
/// flag of `authzd serve`, every value passes its flag's parser, and the whole
/// file validates as a server configuration (its TLS files replaced, by flags,
/// with throw-away ones: flags win over the file).
#[test]
fn example_config_file_keys_are_serve_flags() {
    let text = read("deploy/authzd.yaml");
    let flags: BTreeSet<String> = Cli::command()
        .find_subcommand("serve")
        .expect("serve subcommand")
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .filter(|l| l != "help" && l != "config")
        .collect();
    let doc: Value = serde_yaml_ng::from_str(&text).expect("deploy/authzd.yaml is YAML");
    let keys: Vec<String> = doc
        .as_mapping()
        .expect("a mapping of settings")
        .keys()
        .map(|k| k.as_str().expect("string keys").replace('_', "-"))
        .collect();
    for k in &keys {
        assert!(flags.contains(k), "deploy/authzd.yaml: `{k}` is not a flag of `authzd serve`");
    }
    for k in ["listen", "store", "tls-cert", "tls-key", "tls-client-ca", "admin-client-cn"] {
        assert!(keys.iter().any(|x| x == k), "the example shows `{k}`");
    }
    let settings = authzd::config::file_settings(&text).unwrap_or_else(|e| panic!("deploy/authzd.yaml: {e}"));
    assert_eq!(settings.len(), keys.len());

    // Validate it whole, with real (throw-away) certificates given as flags.
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let path = |p: &Path| p.display().to_string();
    let args: Vec<String> = [
        "serve",
        "--config",
        &path(&root().join("deploy/authzd.yaml")),
        "--tls-cert",
        &path(&cert_path),
        "--tls-key",
        &path(&key_path),
        "--tls-client-ca",
        &path(&cert_path),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let config = serve_config("deploy/authzd.yaml", &args, &[]);
    assert!(config.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()), "mTLS");
    assert_eq!(config.retention.keep, Duration::from_secs(7 * 24 * 3_600), "changelog-retention-ms");
    assert_eq!(config.retention.interval, Duration::from_secs(3_600), "compaction-interval-ms");
    assert!(config.retention.enabled());
    assert!(!config.admin_client_cns.is_empty());
    assert!(config.security_warnings().is_empty(), "the example is not exposed: {:?}", config.security_warnings());
}

/// The changelog retention settings: 7 days hourly by default; the flag, its
/// environment variable and 0 (keep everything) reach the server's configuration.
#[test]
fn changelog_retention_is_configurable() {
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let defaults = serve_config("defaults", &args(&["serve"]), &[]);
    assert_eq!(defaults.retention, authzd::replica::Retention::default());
    assert_eq!(defaults.retention.keep, Duration::from_secs(7 * 24 * 3_600));
    assert_eq!(defaults.retention.interval, Duration::from_secs(3_600));
    let off = serve_config("flag", &args(&["serve", "--changelog-retention-ms", "0"]), &[]);
    assert!(!off.retention.enabled(), "0 keeps everything");
    let env = [
        ("AUTHZD_CHANGELOG_RETENTION_MS".to_owned(), "86400000".to_owned()),
        ("AUTHZD_COMPACTION_INTERVAL_MS".to_owned(), "600000".to_owned()),
    ];
    let from_env = serve_config("environment", &args(&["serve"]), &env);
    assert_eq!(from_env.retention.keep, Duration::from_secs(86_400));
    assert_eq!(from_env.retention.interval, Duration::from_secs(600));
}
