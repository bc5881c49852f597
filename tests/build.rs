//! `berth build` as root: three real Containerfiles (a busybox web server with COPY and a
//! HEALTHCHECK, a two-stage build, one using ARG/ENV/USER/WORKDIR) built on the busybox image
//! the tests make from Debian's busybox-static, run under the supervisor and with `berth run`;
//! the build cache (unchanged, changed and --no-cache rebuilds); crafted contexts that try to
//! reach outside the context or the image root; errors that name the line; and the saved
//! image read by skopeo and umoci.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::daemon::{wait_until, Daemon, SupervisorEnv};
use common::registry::have;
use common::*;

/// Writes `files` (path, content) under a fresh context dir `name` of the test.
fn context(env: &TestEnv, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = env.dir.path().join(name);
    for (path, content) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    dir
}

fn build(env: &TestEnv, ctx: &Path, tag: &str, extra: &[&str]) -> Output {
    let out = env
        .command()
        .args(["build", "-t", tag])
        .args(extra)
        .arg(ctx)
        .output()
        .unwrap();
    // Whatever happened, a build leaves no scratch dir, RUN container or mount behind.
    let scratch: Vec<_> = std::fs::read_dir(env.root().join("tmp"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("build-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    assert!(scratch.is_empty(), "scratch dirs left: {scratch:?}");
    env.assert_no_leaks();
    out
}

fn build_ok(env: &TestEnv, ctx: &Path, tag: &str, extra: &[&str]) -> String {
    let out = build(env, ctx, tag, extra);
    assert!(
        out.status.success(),
        "build {tag}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    let so = stdout(&out);
    assert!(so.starts_with(tag), "stdout names the image: {so}");
    stderr(&out)
}

/// The manifest digest `build` printed for the image.
fn digest_of(env: &TestEnv, tag: &str) -> String {
    let out = env
        .command()
        .args(["image", "inspect", tag])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["digest"].as_str().unwrap().to_string()
}

/// `berth run` of IMAGE with `script`, network none; returns stdout.
fn run_script(env: &TestEnv, name: &str, image: &str, script: &str) -> String {
    let dir = env.dir.path().join("run-specs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "image = {image:?}\nentrypoint = [\"sh\", \"-c\", {script:?}]\n[network]\nmode = \"none\"\n"
        ),
    )
    .unwrap();
    let out = env.run(&path);
    assert!(
        out.status.success(),
        "run {name}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn containerfile(ctx: &Path, text: &str) {
    std::fs::write(
        ctx.join("Containerfile"),
        text.replace("@BASE@", busybox_image()),
    )
    .unwrap();
}

#[test]
fn web_server_with_copy_and_healthcheck_runs_under_the_supervisor() {
    if skip_unless_root("build a web server image") {
        return;
    }
    let env = TestEnv::new("build-web");
    let ctx = context(
        &env,
        "web",
        &[
            ("site/index.html", "<h1>built by berth</h1>\n"),
            ("site/about/index.html", "about\n"),
            ("site/notes.log", "not for the image\n"),
            (".dockerignore", "**/*.log\n"),
        ],
    );
    containerfile(
        &ctx,
        "FROM @BASE@\n\
         COPY site/ /www/\n\
         EXPOSE 8080\n\
         HEALTHCHECK --interval=1s --timeout=2s --retries=3 CMD nc 127.0.0.1 8080 </dev/null\n\
         STOPSIGNAL SIGTERM\n\
         LABEL org.example.app=web\n\
         CMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    );
    let log = build_ok(&env, &ctx, "localhost/web:1", &[]);
    assert!(log.contains("STEP 2/7: COPY site/ /www/"), "{log}");

    // The config carries what the instructions said, in Docker's keys.
    let tar = env.dir.path().join("web.tar");
    let out = env
        .command()
        .args(["image", "save", "localhost/web:1", "-o"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let layout = env.dir.path().join("web-layout");
    std::fs::create_dir_all(&layout).unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        let v: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                layout
                    .join("blobs/sha256")
                    .join(d.trim_start_matches("sha256:")),
            )
            .unwrap(),
        )
        .unwrap();
        v
    };
    let manifest = blob(manifest_digest);
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let c = &config["config"];
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["httpd", "-f", "-p", "8080", "-h", "/www"])
    );
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(
        c["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "nc 127.0.0.1 8080 </dev/null"],
            "Interval": 1_000_000_000u64, "Timeout": 2_000_000_000u64, "Retries": 3})
    );
    assert_eq!(c["StopSignal"], "SIGTERM");
    assert_eq!(c["Labels"]["org.example.app"], "web");
    assert_eq!(
        manifest["layers"].as_array().unwrap().len(),
        2,
        "the base and one COPY layer"
    );
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 7, "{history:?}");
    assert_eq!(
        history.iter().filter(|h| h["empty_layer"] != true).count(),
        2
    );

    // Served under the supervisor, with the image's own command and workdir.
    let d = Daemon::start(&env);
    std::fs::create_dir_all(env.specs()).unwrap();
    let tmp = env.specs().join(".web.toml.tmp");
    std::fs::write(
        &tmp,
        "image = \"localhost/web:1\"\n[network]\nmode = \"none\"\n[health]\ntcp = { port = 8080 }\ninterval = \"200ms\"\n",
    )
    .unwrap();
    std::fs::rename(&tmp, env.specs().join("web.toml")).unwrap();
    let mut last = None;
    let healthy = (0..300).any(|_| {
        last = env.status("web");
        let ok = last
            .as_ref()
            .map(|s| s["health"] == "healthy")
            .unwrap_or(false);
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    });
    assert!(healthy, "web healthy: {last:?}\n{}", env.daemon_log());
    let get = |path: &str| {
        let out = env.ctl(&[
            "exec",
            "web",
            "sh",
            "-c",
            &format!("printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 8080"),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let page = get("/");
    assert!(
        page.lines().next().unwrap_or("").ends_with(" 200 OK"),
        "{page}"
    );
    assert!(page.contains("<h1>built by berth</h1>"), "{page}");
    assert!(get("/about/").contains("about"));
    assert!(
        get("/notes.log").contains("404"),
        ".dockerignore kept the log out"
    );
    d.stop();
    env.assert_no_leaks();
}

#[test]
fn two_stage_build_keeps_only_what_the_last_stage_copies() {
    if skip_unless_root("two-stage build") {
        return;
    }
    let env = TestEnv::new("build-stages");
    let ctx = context(
        &env,
        "stages",
        &[("src/greet.sh", "#!/bin/sh\necho \"hello, $1\"\n")],
    );
    containerfile(
        &ctx,
        "FROM @BASE@ AS build\n\
         COPY src /src\n\
         RUN mkdir -p /out && sed 's/hello/hi/' /src/greet.sh > /out/greet && chmod 755 /out/greet \\\n\
             && dd if=/dev/zero of=/out/junk bs=1k count=64 2>/dev/null\n\
         \n\
         FROM @BASE@\n\
         COPY --from=build /out/greet /usr/local/bin/greet\n\
         ENTRYPOINT [\"/usr/local/bin/greet\"]\n\
         CMD [\"world\"]\n",
    );
    build_ok(&env, &ctx, "localhost/greet:1", &[]);
    let got = run_script(
        &env,
        "greet",
        "localhost/greet:1",
        "greet there; ls -l /usr/local/bin/greet | cut -c1-10; \
         [ -e /out ] && echo out:present || echo out:absent; \
         [ -e /src ] && echo src:present || echo src:absent",
    );
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["hi, there", "-rwxr-xr-x", "out:absent", "src:absent"]
    );
    // The image's own entrypoint and command.
    let spec = env.dir.path().join("run-specs/plain.toml");
    std::fs::write(
        &spec,
        "image = \"localhost/greet:1\"\n[network]\nmode = \"none\"\n",
    )
    .unwrap();
    let out = env.run(&spec);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi, world\n");
    let out = env
        .command()
        .args(["image", "inspect", "localhost/greet:1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["layers"].as_array().unwrap().len(),
        2,
        "the base and the copied file"
    );
    env.assert_no_leaks();
}

#[test]
fn args_env_user_and_workdir() {
    if skip_unless_root("ARG/ENV/USER/WORKDIR build") {
        return;
    }
    let env = TestEnv::new("build-args");
    let ctx = context(&env, "args", &[("conf/app.conf", "level=info\n")]);
    containerfile(
        &ctx,
        "ARG BASE_IMAGE=@BASE@\n\
         FROM ${BASE_IMAGE}\n\
         ARG VERSION=1.0\n\
         ARG FLAVOR\n\
         ENV APP_HOME=/srv/app APP_VERSION=$VERSION\n\
         WORKDIR $APP_HOME\n\
         RUN chown 65534:65534 . && echo \"built $VERSION-$FLAVOR\" > /built\n\
         COPY --chown=nobody:nogroup --chmod=640 conf/app.conf etc/\n\
         USER nobody\n\
         WORKDIR data\n\
         RUN id -un > whoami && pwd > where\n",
    );
    let log = build_ok(
        &env,
        &ctx,
        "localhost/args:1",
        &[
            "--build-arg",
            "VERSION=2.5",
            "--build-arg",
            "FLAVOR=lite",
            "--build-arg",
            "UNUSED=x",
        ],
    );
    assert!(log.contains("not consumed by any ARG: UNUSED"), "{log}");
    let got = run_script(
        &env,
        "args",
        "localhost/args:1",
        "cat /built; echo $APP_HOME $APP_VERSION; pwd; id -u; cat whoami where; \
         ls -ln /srv/app/etc/app.conf | cut -c1-10; stat -c '%u:%g' /srv/app/etc/app.conf; \
         echo ${VERSION:-no-arg-at-run-time}",
    );
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        [
            "built 2.5-lite",
            "/srv/app 2.5",
            "/srv/app/data",
            "65534",
            "nobody",
            "/srv/app/data",
            "-rw-r-----",
            "65534:65534",
            "no-arg-at-run-time",
        ]
    );
    env.assert_no_leaks();
}

#[test]
fn the_cache_rebuilds_from_the_first_changed_step() {
    if skip_unless_root("build cache") {
        return;
    }
    let env = TestEnv::new("build-cache");
    let ctx = context(&env, "cache", &[("a.txt", "one\n"), ("b.txt", "two\n")]);
    containerfile(
        &ctx,
        "FROM @BASE@\n\
         RUN echo first > /first\n\
         COPY a.txt /a.txt\n\
         RUN cat /a.txt > /copied-a\n\
         COPY b.txt /b.txt\n\
         CMD [\"cat\", \"/a.txt\", \"/b.txt\"]\n",
    );
    let log = build_ok(&env, &ctx, "localhost/cache:1", &[]);
    assert!(log.contains("6 steps, 0 from the cache"), "{log}");
    let first = digest_of(&env, "localhost/cache:1");

    let log = build_ok(&env, &ctx, "localhost/cache:1", &[]);
    assert!(
        log.contains("6 steps, 4 from the cache"),
        "every layer step cached: {log}"
    );
    assert_eq!(
        digest_of(&env, "localhost/cache:1"),
        first,
        "an unchanged rebuild is the same image"
    );

    // b.txt changed: only its COPY is redone.
    std::fs::write(ctx.join("b.txt"), "two, changed\n").unwrap();
    let log = build_ok(&env, &ctx, "localhost/cache:2", &[]);
    assert!(log.contains("6 steps, 3 from the cache"), "{log}");
    assert_ne!(digest_of(&env, "localhost/cache:2"), first);
    // a.txt changed: its COPY and everything after it.
    std::fs::write(ctx.join("a.txt"), "one, changed\n").unwrap();
    let log = build_ok(&env, &ctx, "localhost/cache:3", &[]);
    assert!(log.contains("6 steps, 1 from the cache"), "{log}");
    let got = run_script(
        &env,
        "c3",
        "localhost/cache:3",
        "cat /first /copied-a /b.txt",
    );
    assert_eq!(got, "first\none, changed\ntwo, changed\n");
    // The earlier image still has its own files.
    assert_eq!(
        run_script(&env, "c1", "localhost/cache:1", "cat /a.txt /b.txt"),
        "one\ntwo\n"
    );

    let log = build_ok(&env, &ctx, "localhost/cache:4", &["--no-cache"]);
    assert!(log.contains("6 steps, 0 from the cache"), "{log}");
    env.assert_no_leaks();
}

#[test]
fn crafted_contexts_stay_inside_the_context_and_the_image() {
    if skip_unless_root("crafted build contexts") {
        return;
    }
    let env = TestEnv::new("build-escape");
    let secret = env.dir.path().join("secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let ctx = context(&env, "evil", &[("ok.txt", "ok\n")]);
    std::os::unix::fs::symlink(&secret, ctx.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("../secret", ctx.join("rel-link")).unwrap();
    std::fs::create_dir_all(ctx.join("dir")).unwrap();
    std::os::unix::fs::symlink("/etc", ctx.join("dir/etc-link")).unwrap();
    // An archive whose members climb out and go through a link to the host's /tmp.
    let tarball = ctx.join("evil.tar");
    {
        let f = std::fs::File::create(&tarball).unwrap();
        let mut b = tar::Builder::new(f);
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw so `..` survives into the archive.
            h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, data).unwrap();
        };
        add("../../../escaped-by-dotdot", b"x");
        add("fine/inside", b"inside");
        b.finish().unwrap();
    }
    let marker = format!("/tmp/berth-build-escape-{}", std::process::id());
    let run_fails = |name: &str, text: &str, want: &str| {
        containerfile(&ctx, text);
        let out = build(&env, &ctx, &format!("localhost/evil:{name}"), &[]);
        assert!(!out.status.success(), "{name} must fail: {}", stdout(&out));
        assert!(stderr(&out).contains(want), "{name}: {}", stderr(&out));
    };
    run_fails(
        "dotdot",
        "FROM @BASE@\nCOPY ../secret /x\n",
        "Containerfile:2: COPY ../secret /x: source \"../secret\": not found",
    );
    run_fails(
        "abs",
        "FROM @BASE@\nCOPY abs-link /x\n",
        "Containerfile:2: COPY abs-link /x",
    );
    run_fails(
        "rel",
        "FROM @BASE@\nCOPY rel-link /x\n",
        "Containerfile:2: COPY rel-link /x",
    );

    // A link inside a copied dir is copied as a link, never followed.
    containerfile(
        &ctx,
        &format!(
            "FROM @BASE@\n\
             RUN ln -s /tmp /image-link\n\
             COPY dir /copied/\n\
             COPY ok.txt /image-link/{}\n\
             ADD evil.tar /unpacked/\n",
            marker.trim_start_matches("/tmp/")
        ),
    );
    build_ok(&env, &ctx, "localhost/evil:ok", &[]);
    assert!(
        !Path::new(&marker).exists(),
        "COPY through an image symlink reached the host"
    );
    assert!(!env.dir.path().join("escaped-by-dotdot").exists());
    assert!(!Path::new("/escaped-by-dotdot").exists());
    let got = run_script(
        &env,
        "evil",
        "localhost/evil:ok",
        &format!(
            "readlink /copied/etc-link; cat {marker}; cat /unpacked/fine/inside; echo; \
             ls /unpacked; [ -e /escaped-by-dotdot ] && echo climbed-to-root; true"
        ),
    );
    assert_eq!(
        got.lines().collect::<Vec<_>>(),
        ["/etc", "ok", "inside", "escaped-by-dotdot", "fine"],
        "`..` members stay below the ADD destination: {got}"
    );
    env.assert_no_leaks();
}

#[test]
fn errors_name_the_line_and_keep_the_store() {
    if skip_unless_root("build errors") {
        return;
    }
    let env = TestEnv::new("build-errors");
    let ctx = context(&env, "bad", &[("a", "a\n")]);
    containerfile(&ctx, "FROM @BASE@\nRUN true\nFROBNICATE x\nCOPY\n");
    let out = build(&env, &ctx, "localhost/bad:1", &[]);
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("Containerfile:3: unknown instruction FROBNICATE"),
        "{err}"
    );
    assert!(
        err.contains("Containerfile:4: COPY needs at least one source and a destination"),
        "{err}"
    );
    assert!(
        !err.contains("STEP"),
        "nothing runs before the file parses: {err}"
    );

    containerfile(
        &ctx,
        "FROM @BASE@\nRUN echo partial > /p\nRUN echo failing; exit 3\nCMD x\n",
    );
    let out = build(&env, &ctx, "localhost/bad:1", &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Containerfile:3: RUN echo failing; exit 3: the command exited with status 3"),
        "{err}"
    );
    let out = env
        .command()
        .args(["image", "inspect", "localhost/bad:1"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a failed build records no image");

    containerfile(&ctx, "FROM @BASE@\nCOPY missing.txt /\n");
    let out = build(&env, &ctx, "localhost/bad:1", &[]);
    assert!(
        stderr(&out)
            .contains("Containerfile:2: COPY missing.txt /: source \"missing.txt\": not found"),
        "{}",
        stderr(&out)
    );
    env.assert_no_leaks();
}

#[test]
fn saved_images_are_read_by_skopeo_and_umoci() {
    if skip_unless_root("skopeo and umoci read a built image") {
        return;
    }
    if !have("skopeo") || !have("umoci") {
        eprintln!("skipping: skopeo or umoci is not installed");
        return;
    }
    let env = TestEnv::new("build-interop");
    let ctx = context(&env, "interop", &[("hello.txt", "hello\n")]);
    containerfile(
        &ctx,
        "FROM @BASE@\nWORKDIR /app\nCOPY hello.txt .\nRUN rm /bin/true && mkdir -p /gone && rm -r /gone\nUSER 1000:1000\nENV MODE=prod\nCMD [\"cat\", \"hello.txt\"]\n",
    );
    build_ok(&env, &ctx, "localhost/interop:1", &[]);
    let tar = env.dir.path().join("interop.tar");
    let out = env
        .command()
        .args(["image", "save", "localhost/interop:1", "-o"])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for transport in [
        format!("oci-archive:{}:1", tar.display()),
        format!("docker-archive:{}", tar.display()),
    ] {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--config", &transport])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect {transport}: {}",
            stderr(&out)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["config"]["User"], "1000:1000", "{transport}");
        assert_eq!(v["config"]["WorkingDir"], "/app");
        assert_eq!(v["config"]["Cmd"], serde_json::json!(["cat", "hello.txt"]));
        assert_eq!(v["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    }
    let layout = env.dir.path().join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    assert!(std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap()
        .success());
    let bundle = env.dir.path().join("bundle");
    let out = std::process::Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci unpack: {}", stderr(&out));
    let rootfs = bundle.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(rootfs.join("app/hello.txt")).unwrap(),
        "hello\n"
    );
    assert!(
        !rootfs.join("bin/true").exists(),
        "the whiteout removed /bin/true"
    );
    assert!(rootfs.join("bin/busybox").exists());
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["process"]["cwd"], "/app");
    assert_eq!(cfg["process"]["user"]["uid"], 1000);
    // berth reads its own archive back.
    let other = TestEnv::new("build-interop-import");
    let out = other
        .command()
        .args(["image", "import", "--name", "localhost/again:1"])
        .arg(format!("oci-archive:{}:1", tar.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        run_script(
            &other,
            "again",
            "localhost/again:1",
            "cat /app/hello.txt; id -u"
        ),
        "hello\n1000\n"
    );
    env.assert_no_leaks();
}

#[test]
fn a_spec_names_a_build_and_is_rebuilt_when_its_context_changes() {
    if skip_unless_root("a spec with build") {
        return;
    }
    let env = TestEnv::new("build-spec");
    let ctx = context(&env, "app", &[("msg", "v1\n")]);
    containerfile(
        &ctx,
        "FROM @BASE@\nCOPY msg /msg\nHEALTHCHECK --interval=200ms --retries=2 CMD test -s /msg\n\
         CMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 0.1; done\"]\n",
    );
    let d = Daemon::start(&env);
    std::fs::create_dir_all(env.specs()).unwrap();
    let body = format!(
        "build = {{ context = {:?} }}\n[network]\nmode = \"none\"\n[update]\ncheck = \"1s\"\n",
        ctx.display().to_string()
    );
    let out = env
        .command()
        .arg("validate")
        .arg(write_spec_file(&env, "app", &body))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let msg = |env: &TestEnv| {
        let out = env.ctl(&["exec", "app", "cat", "/msg"]);
        out.status.success().then(|| stdout(&out))
    };
    wait_until(Duration::from_secs(60), "app runs its built image", || {
        msg(&env).as_deref() == Some("v1\n")
    });
    // The Containerfile's HEALTHCHECK is the container's probe (the spec has no [health]).
    wait_until(
        Duration::from_secs(30),
        "app healthy by its HEALTHCHECK",
        || env.status("app").is_some_and(|s| s["health"] == "healthy"),
    );
    let first = env.status("app").unwrap();
    assert!(
        first["image"]
            .as_str()
            .unwrap()
            .starts_with("localhost/berth-build/app:latest"),
        "{first}"
    );
    std::fs::write(ctx.join("msg"), "v2\n").unwrap();
    wait_until(
        Duration::from_secs(60),
        "app rebuilt from the changed context",
        || msg(&env).as_deref() == Some("v2\n"),
    );
    let second = env.status("app").unwrap();
    assert_ne!(
        first["id"], second["id"],
        "a new container from the new image"
    );
    d.stop();
    env.assert_no_leaks();

    // Validation: a build needs a context dir with a Containerfile, and excludes `image`.
    let cases = [
        (
            "both",
            format!(
                "image = \"x\"\nbuild = {{ context = {:?} }}\n",
                ctx.display().to_string()
            ),
            "set either `image` or `build`, not both",
        ),
        (
            "nodir",
            "build = { context = \"/nonexistent/ctx\" }\n".to_string(),
            "build.context: /nonexistent/ctx is not a directory",
        ),
        (
            "nofile",
            format!(
                "build = {{ context = {:?}, file = \"Nope\" }}\n",
                ctx.display().to_string()
            ),
            "is not a file",
        ),
    ];
    for (name, body, want) in cases {
        let path = env.dir.path().join(format!("bad-{name}.toml"));
        std::fs::write(&path, body).unwrap();
        let out = env.command().arg("validate").arg(&path).output().unwrap();
        assert!(!out.status.success(), "{name}");
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(text.contains(want), "{name}: {text}");
    }
}

/// Writes `specs/NAME.toml` with `body` as it is (temp file and rename); returns its path.
fn write_spec_file(env: &TestEnv, name: &str, body: &str) -> PathBuf {
    let tmp = env.specs().join(format!(".{name}.toml.tmp"));
    std::fs::write(&tmp, body).unwrap();
    let path = env.specs().join(format!("{name}.toml"));
    std::fs::rename(&tmp, &path).unwrap();
    path
}

#[test]
fn from_a_rootfs_dir_and_from_scratch() {
    if skip_unless_root("FROM rootfs: and scratch") {
        return;
    }
    let env = TestEnv::new("build-rootfs");
    // A plain dir: the busybox image's layer, unpacked.
    let layout = busybox_image()
        .trim_start_matches("oci:")
        .trim_end_matches(":latest")
        .to_string();
    let layer = std::fs::read_dir(Path::new(&layout).join("blobs/sha256"))
        .unwrap()
        .flatten()
        .max_by_key(|e| e.metadata().unwrap().len())
        .unwrap()
        .path();
    let rootfs = env.dir.path().join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    assert!(std::process::Command::new("tar")
        .arg("xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs)
        .status()
        .unwrap()
        .success());
    let ctx = context(&env, "rootfs-ctx", &[("note", "from a dir\n")]);
    std::fs::write(
        ctx.join("Containerfile"),
        format!(
            "FROM rootfs:{} AS base\n\
             COPY note /note\n\
             FROM scratch\n\
             COPY --from=base /bin/busybox /busybox\n\
             COPY --from=base /note /note\n\
             ENTRYPOINT [\"/busybox\"]\n\
             CMD [\"cat\", \"/note\"]\n",
            rootfs.display()
        ),
    )
    .unwrap();
    build_ok(&env, &ctx, "localhost/tiny:1", &[]);
    let spec = env.dir.path().join("tiny.toml");
    std::fs::write(
        &spec,
        "image = \"localhost/tiny:1\"\n[network]\nmode = \"none\"\n",
    )
    .unwrap();
    let out = env.run(&spec);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "from a dir\n");
    let out = env
        .command()
        .args(["image", "inspect", "localhost/tiny:1"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["layers"].as_array().unwrap().len(),
        2,
        "two COPY layers on scratch"
    );
    env.assert_no_leaks();
}
