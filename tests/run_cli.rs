//! `berth run` as root: exit codes, signals, stdin and bad input.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

const NONE: &str = "[network]\nmode = \"none\"\n";

#[test]
fn exit_code_is_the_containers() {
    if skip_unless_root("exit") {
        return;
    }
    let env = TestEnv::new("exit");
    let spec = env.spec(
        "e",
        &format!("command = [\"sh\", \"-c\", \"echo out; echo err >&2; exit 3\"]\n{NONE}"),
    );
    let out = env.run(&spec);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(stderr(&out), "err\n");
    env.assert_no_leaks();
}

#[test]
fn signals_are_forwarded_and_the_third_kills() {
    if skip_unless_root("signals") {
        return;
    }
    let env = TestEnv::new("signals");
    let spec = env.spec(
        "trap",
        &format!("command = [\"sh\", \"-c\", \"trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done\"]\n{NONE}"),
    );
    let send = |child: &std::process::Child, n: usize| {
        for _ in 0..n {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let wait_ready = |child: &mut std::process::Child| {
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut buf).unwrap();
        assert_eq!(&buf, b"ready\n");
    };
    let mut child = env
        .command()
        .arg("run")
        .arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut child);
    send(&child, 1);
    assert_eq!(child.wait().unwrap().code(), Some(42));

    // An init that ignores SIGTERM is killed on the third: 128 + 9.
    let spec = env.spec(
        "stubborn",
        &format!("command = [\"sh\", \"-c\", \"trap '' TERM; echo ready; while :; do sleep 0.05; done\"]\n{NONE}"),
    );
    let mut child = env
        .command()
        .arg("run")
        .arg(&spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(&mut child);
    send(&child, 3);
    assert_eq!(child.wait().unwrap().code(), Some(137));
    env.assert_no_leaks();
}

#[test]
fn stdin_only_with_interactive() {
    if skip_unless_root("stdin") {
        return;
    }
    let env = TestEnv::new("stdin");
    let spec = env.spec("cat", &format!("command = [\"cat\"]\n{NONE}"));
    let out = output_with_input(env.command().args(["run", "-i"]).arg(&spec), b"hello\n");
    assert!(out.status.success());
    assert_eq!(stdout(&out), "hello\n");
    // Without -i the container reads an empty stdin even when ours has data.
    let out = output_with_input(env.command().args(["run"]).arg(&spec), b"hello\n");
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    env.assert_no_leaks();
}

#[test]
fn tty_gives_the_command_a_terminal_of_its_own() {
    if skip_unless_root("tty") {
        return;
    }
    let env = TestEnv::new("tty");
    let spec = env.spec(
        "t",
        &format!(
            "command = [\"sh\", \"-c\", \"tty; stty size; test -t 0 && test -t 2 && echo all-tty; stat -c %u $(tty); exit 4\"]\n{NONE}"
        ),
    );
    // Ours is a pipe: the container's is still a pty from its own devpts, 24x80, its exit
    // code ours, and output with the terminal's CRLF.
    let out = env
        .command()
        .args(["run", "-t"])
        .arg(&spec)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "/dev/pts/0\r\n24 80\r\nall-tty\r\n0\r\n");

    // -it from a terminal (script's pty, 30x100): the size carries over, keystrokes reach
    // an interactive shell through our raw terminal, its exit code is ours.
    let spec = env.spec("sh", &format!("command = [\"sh\"]\n{NONE}"));
    let inner = format!(
        "stty rows 30 cols 100; exec {} --root {} --cgroup-parent {} run -it {}",
        berth_bin(),
        env.root().display(),
        env.cgroup_parent,
        spec.display()
    );
    let out = output_with_input(
        std::process::Command::new("script").args(["-qec", &inner, "/dev/null"]),
        b"stty size; echo $((6*7))x\nexit 5\n",
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(5), "{text}{}", stderr(&out));
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("42x"), "{text}");
    env.assert_no_leaks();
}

/// Bad input: exit 125, one line naming the thing, nothing left behind.
fn assert_berth_error(env: &TestEnv, out: &std::process::Output, names: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains(names), "{err:?} does not name {names:?}");
    env.assert_no_leaks();
}

#[test]
fn bad_input_is_one_line_and_exit_125() {
    if skip_unless_root("badinput") {
        return;
    }
    let env = TestEnv::new("bad");
    let missing = env.dir.path().join("no-such-layout");
    let spec = env.spec_with_image("missing", &format!("oci:{}:v1", missing.display()), NONE);
    assert_berth_error(&env, &env.run(&spec), &missing.display().to_string());

    let broken = env.dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("oci-layout"),
        "{\"imageLayoutVersion\":\"1.0.0\"}",
    )
    .unwrap();
    std::fs::write(broken.join("index.json"), "{ not json").unwrap();
    let spec = env.spec_with_image("broken", &format!("oci:{}:v1", broken.display()), NONE);
    assert_berth_error(&env, &env.run(&spec), "index.json");

    let spec = env.spec("nocmd", &format!("command = [\"no-such-command\"]\n{NONE}"));
    assert_berth_error(&env, &env.run(&spec), "no-such-command");

    let spec = env.spec("badspec", "[resources]\nmemory = \"1M\"\n");
    assert_berth_error(&env, &env.run(&spec), "badspec.toml:3:10: resources.memory");

    let spec = env.spec("ok", &format!("command = [\"true\"]\n{NONE}"));
    let file_root = env.dir.path().join("a-file");
    std::fs::write(&file_root, "").unwrap();
    let out = std::process::Command::new(berth_bin())
        .arg("--root")
        .arg(&file_root)
        .arg("--cgroup-parent")
        .arg(&env.cgroup_parent)
        .arg("run")
        .arg(&spec)
        .output()
        .unwrap();
    assert_berth_error(&env, &out, &file_root.display().to_string());
}
