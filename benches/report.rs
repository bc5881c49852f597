//! `cargo bench --bench report`: writes docs/benchmarks.md and its plots (docs/bench-*.svg)
//! from the results the other benchmarks left under `BENCH_OUT` (default target/bench):
//! run.json (`cargo bench --bench run`), supervise.json (`cargo bench --bench supervise`) and
//! pull.json (`cargo bench --bench pull`). A missing file leaves its section saying which
//! command makes it. Nothing here measures anything: the numbers are the benchmarks' own.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

type Plot = Result<(), Box<dyn std::error::Error>>;

fn main() {
    let out = std::env::var_os("BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench"));
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let read = |name: &str| -> Option<Value> {
        let text = std::fs::read_to_string(out.join(format!("{name}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    };
    let (run, supervise, pull, build) =
        (read("run"), read("supervise"), read("pull"), read("build"));

    let mut md = String::new();
    md.push_str(
        "# Benchmarks\n\n\
         Made by `cargo bench --bench report` from the JSON the benchmarks write under \
         target/bench; regenerate all of it, as root, with\n\n\
         ```sh\n\
         cargo bench --bench run && cargo bench --bench supervise && cargo bench --bench pull \
         && cargo bench --bench build && cargo bench --bench report\n\
         ```\n\n\
         Every comparison runs its arms in the same run, interleaved, on the same image \
         (busybox-static as built by `examples/busybox-image.sh`, or the pull benchmark's own). \
         Ratios are berth / the other: below 1 means berth is faster or smaller.\n\n",
    );
    machine_section(&mut md, [&run, &supervise, &pull, &build]);
    match &run {
        Some(r) => one_shot_section(&mut md, r, &docs),
        None => md.push_str("## One-shot runs\n\nNo results: run `cargo bench --bench run`.\n\n"),
    }
    match &supervise {
        Some(s) => supervise_section(&mut md, s, &docs),
        None => {
            md.push_str("## Supervisor\n\nNo results: run `cargo bench --bench supervise`.\n\n")
        }
    }
    match &pull {
        Some(p) => pull_section(&mut md, p),
        None => md.push_str("## Pull\n\nNo results: run `cargo bench --bench pull`.\n\n"),
    }
    match &build {
        Some(b) => build_section(&mut md, b),
        None => md.push_str("## Build\n\nNo results: run `cargo bench --bench build`.\n\n"),
    }
    let path = docs.join("benchmarks.md");
    std::fs::write(&path, md).unwrap();
    println!("wrote {}", path.display());
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn machine_section(md: &mut String, results: [&Option<Value>; 4]) {
    md.push_str("## Machine\n\n");
    let Some(m) = results
        .iter()
        .filter_map(|r| r.as_ref())
        .find_map(|r| r.get("machine"))
    else {
        md.push_str("Not recorded.\n\n");
        return;
    };
    let s = |k: &str| m[k].as_str().unwrap_or("?").to_string();
    let _ = writeln!(
        md,
        "{} CPUs ({}), kernel {}, Debian {}, cgroups {}, berth {} built by {}.\n",
        m["cpus"],
        s("cpu"),
        s("kernel"),
        s("os"),
        s("cgroups"),
        s("berth"),
        s("berth_binary")
    );
    if let Some(tools) = m["tools"].as_object() {
        md.push_str("| tool | version |\n|---|---|\n");
        for (t, v) in tools {
            let _ = writeln!(md, "| {t} | {} |", v.as_str().unwrap_or(""));
        }
        md.push('\n');
    }
}

fn one_shot_section(md: &mut String, run: &Value, docs: &Path) {
    let runs = &run["runs"];
    let _ = writeln!(
        md,
        "## One-shot runs\n\n`/bin/true` from start to exit, {runs} runs per arm after 3 \
         warm-ups, the arms taking turns: `berth run` against `crun run` and `runc run` of \
         the same rootfs (crun and runc in a private mount namespace where the hybrid host's \
         unified cgroup.controllers reads empty). Wall is the time to exit; cpu is user + \
         system of everything the command ran (RUSAGE_CHILDREN). `berth` is {}; `berth-glibc` \
         is cargo's dynamic glibc build of the same code.\n\n\
         | variant | runtime | wall median | min - max | p90 | cpu median | wall ratio | cpu ratio |\n\
         |---|---|---|---|---|---|---|---|",
        run["machine"]["berth_binary"]
            .as_str()
            .unwrap_or("the binary benchmarked")
    );
    let variants = run["one_shot"].as_array().cloned().unwrap_or_default();
    for v in &variants {
        let arms = v["arms"].as_array().cloned().unwrap_or_default();
        let Some(berth) = arms.iter().find(|a| a["name"] == "berth") else {
            continue;
        };
        for a in &arms {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} ms | {:.2} - {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x | {:.2}x |",
                v["variant"].as_str().unwrap_or(""),
                a["name"].as_str().unwrap_or(""),
                f(&a["wall_ms"]),
                f(&a["wall_min_ms"]),
                f(&a["wall_max_ms"]),
                f(&a["wall_p90_ms"]),
                f(&a["cpu_ms"]),
                f(&berth["wall_ms"]) / f(&a["wall_ms"]),
                f(&berth["cpu_ms"]) / f(&a["cpu_ms"]),
            );
        }
    }
    let _ = writeln!(
        md,
        "\nberth's peak RSS (largest process of a run): {:.1} MiB.\n",
        f(&run["peak_rss_kib"]) / 1024.0
    );
    let svg = docs.join("bench-one-shot.svg");
    match one_shot_plot(&variants, &svg) {
        Ok(()) => {
            md.push_str("![Wall time distributions of the one-shot runs](bench-one-shot.svg)\n\n")
        }
        Err(e) => {
            let _ = writeln!(md, "(plot failed: {e})\n");
        }
    }
}

/// One panel per variant: each runtime's wall times as a cumulative distribution.
fn one_shot_plot(variants: &[Value], path: &Path) -> Plot {
    let root = SVGBackend::new(path, (420 * variants.len().max(1) as u32, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, variants.len().max(1)));
    for (panel, v) in panels.iter().zip(variants) {
        let arms = v["arms"].as_array().cloned().unwrap_or_default();
        let samples: Vec<(String, Vec<f64>)> = arms
            .iter()
            .map(|a| {
                let mut s: Vec<f64> = a["wall_all_ms"]
                    .as_array()
                    .map(|x| x.iter().map(f).collect())
                    .unwrap_or_default();
                s.sort_by(f64::total_cmp);
                (a["name"].as_str().unwrap_or("").to_string(), s)
            })
            .collect();
        let xmax = samples
            .iter()
            .flat_map(|(_, s)| s.last())
            .fold(1.0f64, |m, &x| m.max(x))
            * 1.05;
        let mut chart = ChartBuilder::on(panel)
            .caption(v["variant"].as_str().unwrap_or(""), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(44)
            .build_cartesian_2d(0f64..xmax, 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("wall time, ms")
            .y_desc("% of runs at most")
            .draw()?;
        for (i, (name, s)) in samples.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let n = s.len().max(1) as f64;
            let points = s
                .iter()
                .enumerate()
                .map(|(k, &x)| (x, (k + 1) as f64 * 100.0 / n));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn supervise_section(md: &mut String, s: &Value, docs: &Path) {
    md.push_str("## Supervisor\n\n");
    if let Some(b) = s.get("burst") {
        let mut ps: Vec<f64> = b["ps_ms"]
            .as_array()
            .map(|x| x.iter().map(f).collect())
            .unwrap_or_default();
        ps.sort_by(f64::total_cmp);
        if !ps.is_empty() {
            let at = |q: f64| ps[((ps.len() - 1) as f64 * q).round() as usize];
            let _ = writeln!(
                md,
                "`berth ps --json` while the daemon handles {} spec files moved in at once \
                 (each a container that exits at once), asked every 50 ms, {} times: p50 \
                 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target: under 200 ms).\n",
                b["specs"],
                ps.len(),
                at(0.5),
                at(0.99),
                at(1.0)
            );
        }
    }
    let rows = s["sweep"].as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return;
    }
    md.push_str(
        "### Scaling\n\nFor each size, a daemon of its own: the spec files moved into its dir \
         at once until every container runs (start-all), memory and `ps` with all of them \
         running, then SIGTERM until the daemon has stopped them all and exited (stop-all; \
         the containers trap TERM).\n\n\
         | containers | start-all | per container | stop-all | per container | daemon RSS | \
         monitor RSS | monitor PSS | ps p50 |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        let n = f(&r["containers"]);
        let _ = writeln!(
            md,
            "| {n} | {:.0} ms | {:.2} ms | {:.0} ms | {:.2} ms | {:.1} MiB | {:.0} KiB | {:.0} KiB | {:.1} ms |",
            f(&r["start_all_ms"]),
            f(&r["start_all_ms"]) / n,
            f(&r["stop_all_ms"]),
            f(&r["stop_all_ms"]) / n,
            f(&r["daemon_rss_kib"]) / 1024.0,
            f(&r["monitor_rss_kib"]),
            f(&r["monitor_pss_kib"]),
            f(&r["ps_p50_ms"]),
        );
    }
    md.push('\n');
    md.push_str(&bends(&rows));
    if let Err(e) = sweep_plot(&rows, &docs.join("bench-sweep.svg")) {
        let _ = writeln!(md, "(plot failed: {e})\n");
    } else {
        md.push_str("![The scaling sweep](bench-sweep.svg)\n\n");
    }
    let conmon = s.get("conmon");
    md.push_str("### Memory per container\n\n");
    match conmon {
        Some(c) => {
            let _ = writeln!(
                md,
                "conmon ({}, {} containers started with `podman run -d`): RSS {:.0} KiB, PSS \
                 {:.0} KiB per container. berth's monitor at the same count: see the table \
                 above; the plot puts them side by side.\n",
                c["version"].as_str().unwrap_or("podman"),
                c["containers"],
                f(&c["rss_kib"]),
                f(&c["pss_kib"])
            );
        }
        None => md.push_str("conmon was not measured (podman not installed or skipped).\n\n"),
    }
    if let Err(e) = memory_plot(&rows, conmon, &docs.join("bench-memory.svg")) {
        let _ = writeln!(md, "(plot failed: {e})\n");
    } else {
        md.push_str("![Monitor memory per container against conmon](bench-memory.svg)\n\n");
    }
}

/// Where the per-container cost at the largest size exceeds 1.5 times the smallest's, and
/// between which sizes it first grows by more than half.
fn bends(rows: &[Value]) -> String {
    let mut out = String::new();
    for (what, key) in [
        ("start-all", "start_all_ms"),
        ("stop-all", "stop_all_ms"),
        ("ps", "ps_p50_ms"),
    ] {
        let per: Vec<(f64, f64)> = rows
            .iter()
            .map(|r| (f(&r["containers"]), f(&r[key]) / f(&r["containers"])))
            .collect();
        let bend = per
            .windows(2)
            .find(|w| w[1].1 > w[0].1 * 1.5)
            .map(|w| format!("bends between {} and {} containers", w[0].0, w[1].0));
        // The steepest step between neighbouring sizes, in cost per container.
        let steepest = per
            .windows(2)
            .map(|w| (w[0].0, w[1].0, w[1].1 / w[0].1))
            .max_by(|a, b| a.2.total_cmp(&b.2));
        let _ = writeln!(
            out,
            "- {what}: {:.3} ms per container at {} and {:.3} at {}: {}{}.",
            per[0].1,
            per[0].0,
            per[per.len() - 1].1,
            per[per.len() - 1].0,
            bend.unwrap_or_else(|| "no worse than linear".into()),
            steepest.map_or(String::new(), |(a, b, r)| format!(
                " (steepest step {a} -> {b} containers: {:+.0}% per container)",
                (r - 1.0) * 100.0
            ))
        );
    }
    out.push('\n');
    out
}

/// Start-all and stop-all (total ms), daemon RSS and ps p50, against the container count.
fn sweep_plot(rows: &[Value], path: &Path) -> Plot {
    let root = SVGBackend::new(path, (1260, 380)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 3));
    let xmax = rows.iter().map(|r| f(&r["containers"])).fold(1.0, f64::max) * 1.05;
    let series = |keys: &[(&'static str, &'static str)]| -> Vec<(&'static str, Vec<(f64, f64)>)> {
        keys.iter()
            .map(|(label, key)| {
                let pts = rows
                    .iter()
                    .map(|r| {
                        let v = f(&r[*key]);
                        let v = if key.ends_with("_kib") { v / 1024.0 } else { v };
                        (f(&r["containers"]), v)
                    })
                    .collect();
                (*label, pts)
            })
            .collect()
    };
    let charts = [
        (
            "start-all and stop-all",
            "ms",
            series(&[("start-all", "start_all_ms"), ("stop-all", "stop_all_ms")]),
        ),
        (
            "daemon memory",
            "MiB",
            series(&[("RSS", "daemon_rss_kib"), ("PSS", "daemon_pss_kib")]),
        ),
        (
            "berth ps --json",
            "ms",
            series(&[("p50", "ps_p50_ms"), ("max", "ps_max_ms")]),
        ),
    ];
    for (panel, (title, unit, lines)) in panels.iter().zip(charts) {
        let ymax = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc("containers")
            .y_desc(unit)
            .draw()?;
        for (i, (label, pts)) in lines.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Bars of RSS and PSS per container: berth's monitor at each sweep size, then conmon.
fn memory_plot(rows: &[Value], conmon: Option<&Value>, path: &Path) -> Plot {
    let mut groups: Vec<(String, f64, f64)> = rows
        .iter()
        .map(|r| {
            (
                format!("berth, {}", r["containers"]),
                f(&r["monitor_rss_kib"]),
                f(&r["monitor_pss_kib"]),
            )
        })
        .collect();
    if let Some(c) = conmon {
        groups.push((
            format!("conmon, {}", c["containers"]),
            f(&c["rss_kib"]),
            f(&c["pss_kib"]),
        ));
    }
    let root = SVGBackend::new(path, (760, 400)).into_drawing_area();
    root.fill(&WHITE)?;
    let ymax = groups.iter().map(|g| g.1.max(g.2)).fold(1.0, f64::max) * 1.15;
    let n = groups.len();
    let labels: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption("monitor memory per container", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(54)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < labels.len() {
                labels[i].clone()
            } else {
                String::new()
            }
        })
        .y_desc("KiB")
        .draw()?;
    let rss = Palette99::pick(0).to_rgba();
    let pss = Palette99::pick(1).to_rgba();
    chart
        .draw_series(groups.iter().enumerate().map(|(i, g)| {
            let x = i as f64;
            Rectangle::new([(x + 0.12, 0.0), (x + 0.48, g.1)], rss.filled())
        }))?
        .label("RSS")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], rss.filled()));
    chart
        .draw_series(groups.iter().enumerate().map(|(i, g)| {
            let x = i as f64;
            Rectangle::new([(x + 0.52, 0.0), (x + 0.88, g.2)], pss.filled())
        }))?
        .label("PSS")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], pss.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn pull_section(md: &mut String, p: &Value) {
    let _ = writeln!(
        md,
        "## Pull\n\n`berth image pull` against `skopeo copy` to an OCI layout followed by \
         `umoci unpack`, from Debian's docker-registry on 127.0.0.1, {} rounds alternating \
         after a warm-up of each: {} ({} layers, {:.1} MB gzip, {:.1} MB unpacked); the zstd \
         variant is the same image recompressed by `skopeo copy --dest-compress-format zstd`.\n\n\
         | layers | berth median | rounds | skopeo + umoci median | rounds | ratio |\n\
         |---|---|---|---|---|---|",
        p["rounds"],
        p["image"].as_str().unwrap_or(""),
        p["layers"],
        f(&p["gzip_mb"]),
        f(&p["unpacked_mb"]),
    );
    let secs = |v: &Value| {
        v.as_array()
            .map(|x| {
                x.iter()
                    .map(|s| format!("{:.2}", f(s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    for v in p["variants"].as_array().cloned().unwrap_or_default() {
        let theirs = v["theirs_s"].as_f64();
        let _ = writeln!(
            md,
            "| {} | {:.2} s | {} | {} | {} | {} |",
            v["compression"].as_str().unwrap_or(""),
            f(&v["berth_s"]),
            secs(&v["berth_all_s"]),
            theirs.map_or_else(
                || format!("n/a: {}", v["note"].as_str().unwrap_or("")),
                |t| format!("{t:.2} s")
            ),
            secs(&v["theirs_all_s"]),
            theirs.map_or("-".into(), |t| format!("{:.2}x", f(&v["berth_s"]) / t)),
        );
    }
    md.push('\n');
}

fn build_section(md: &mut String, b: &Value) {
    let _ = writeln!(
        md,
        "## Build\n\n`berth build` against `{}` (`bud --layers --isolation chroot`: its default \
         OCI runtime refuses this hybrid cgroup host) on the same context ({} files) and \
         Containerfiles, {} rounds interleaved after a warm-up of each. `web` is the web server \
         of tests/build.rs (COPY, EXPOSE, HEALTHCHECK, STOPSIGNAL, LABEL, CMD); `web+run` adds a \
         RUN step (a full container in berth). Uncached: `--no-cache`; cached: an unchanged \
         rebuild.\n\n\
         | Containerfile | cache | berth median | min-max | buildah median | min-max | ratio |\n\
         |---|---|---|---|---|---|---|",
        b["buildah"].as_str().unwrap_or("buildah"),
        b["files"],
        b["rounds"],
    );
    for v in b["variants"].as_array().cloned().unwrap_or_default() {
        let theirs = v["buildah_s"].as_f64();
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} s | {:.3}-{:.3} | {} | {} | {} |",
            v["containerfile"].as_str().unwrap_or(""),
            v["cache"].as_str().unwrap_or(""),
            f(&v["berth_s"]),
            f(&v["berth_min_s"]),
            f(&v["berth_max_s"]),
            theirs.map_or_else(
                || format!("n/a: {}", v["note"].as_str().unwrap_or("")),
                |t| format!("{t:.3} s")
            ),
            theirs.map_or("-".into(), |_| format!(
                "{:.3}-{:.3}",
                f(&v["buildah_min_s"]),
                f(&v["buildah_max_s"])
            )),
            theirs.map_or("-".into(), |t| format!("{:.2}x", f(&v["berth_s"]) / t)),
        );
    }
    md.push('\n');
}
