//! Measures kiln's layer compression: `cargo run --release -p kiln-overlay --example compress_bench --
//! FILE [gzip|zstd|none|flate2] [LEVEL] [THREADS] [RUNS]`. Reads FILE once into memory (so the disk is not measured),
//! compresses it RUNS times into a counting sink, and prints each run's MB/s, the median, and the ratio.
//! With OUT set in the environment, the last run's blob is also written there (for `gzip -t` and friends).
//! With LAYER set, FILE is instead streamed from disk through a whole `LayerWriter` (tar, diff_id,
//! compression, digest) once, as a commit does, so `/usr/bin/time -f %M` shows the pipeline's peak RSS.

use std::io::{self, Write};
use std::time::Instant;

use kiln_overlay::compress::{encoder_threads, Compression};

struct Count(u64, Option<Vec<u8>>);

impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        if let Some(v) = &mut self.1 {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args.first().expect("usage: compress_bench FILE [gzip|zstd|none|flate2] [LEVEL] [THREADS] [RUNS]");
    let single = args.get(1).is_some_and(|a| a == "flate2");
    let c = match args.get(1).map(String::as_str).unwrap_or("gzip") {
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => Compression::Gzip,
    };
    let level = args.get(2).and_then(|l| l.parse().ok()).filter(|&l| l > 0);
    let threads = args.get(3).and_then(|t| t.parse().ok()).unwrap_or_else(kiln_overlay::pgzip::default_threads);
    let runs: usize = args.get(4).and_then(|r| r.parse().ok()).unwrap_or(3);
    if std::env::var_os("LAYER").is_some() {
        return layer(file, c, level, threads);
    }
    let data = std::fs::read(file)?;
    let keep = std::env::var_os("OUT");
    let mut times = Vec::new();
    let mut size = 0;
    for run in 0..runs {
        let sink = Count(0, (keep.is_some() && run + 1 == runs).then(Vec::new));
        let start = Instant::now();
        // Feed in tar-writer-sized pieces, as a layer writer does.
        let out = if single {
            // For comparison: one flate2 gzip stream on one thread, as kiln wrote layers before.
            let l = flate2::Compression::new(level.unwrap_or(6));
            let mut e = flate2::GzBuilder::new().mtime(0).write(sink, l);
            for piece in data.chunks(128 * 1024) {
                e.write_all(piece)?;
            }
            e.finish()?
        } else {
            let mut e = encoder_threads(c, level, threads, sink)?;
            for piece in data.chunks(128 * 1024) {
                e.write_all(piece)?;
            }
            e.finish()?
        };
        let secs = start.elapsed().as_secs_f64();
        size = out.0;
        if let (Some(path), Some(bytes)) = (&keep, out.1) {
            std::fs::write(path, bytes)?;
        }
        let mbs = data.len() as f64 / 1e6 / secs;
        eprintln!("run {run}: {secs:.3} s, {mbs:.1} MB/s");
        times.push(mbs);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{file} {c:?} level {level:?} threads {threads}: median {:.1} MB/s, {} -> {} bytes, ratio {:.4}",
        times[times.len() / 2],
        data.len(),
        size,
        size as f64 / data.len() as f64
    );
    Ok(())
}

fn layer(file: &str, c: Compression, level: Option<u32>, threads: usize) -> io::Result<()> {
    let start = Instant::now();
    let mut w = kiln_overlay::LayerWriter::with_threads(Count(0, None), c, level, threads)?;
    w.append_path(std::path::Path::new(file), "big")?;
    let (_, info) = w.finish()?;
    let secs = start.elapsed().as_secs_f64();
    let plain = std::fs::metadata(file)?.len();
    println!(
        "layer {file} {c:?} level {level:?} threads {threads}: {secs:.2} s, {:.1} MB/s, {plain} -> {} bytes, diff_id {}",
        plain as f64 / 1e6 / secs,
        info.size,
        info.diff_id
    );
    Ok(())
}
