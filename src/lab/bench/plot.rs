//! PNG plots of the bench's medians against N, one line per peer, drawn
//! with plotters' bitmap backend.
//!
//! Text needs a font. plotters' `ab_glyph` backend takes font bytes, so the
//! build needs no system font library: at run time the first TrueType file
//! found among `$UVS_BENCH_FONT` and the usual Debian paths (package
//! `fonts-dejavu-core`, which `scripts/test.sh` installs) is used. Without
//! one the plots are still drawn, with lines and a frame only, and say so on
//! stderr.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use super::peers::Peer;
use super::report::stat;
use super::{Metric, Opts, Results};

/// The plotted figures and their file names.
pub const PLOTS: [(Metric, &str); 5] = [
    (Metric::ShortRps, "short_rps.png"),
    (Metric::KeepaliveRps, "keepalive_rps.png"),
    (Metric::LatP50Us, "latency_p50.png"),
    (Metric::LatP99Us, "latency_p99.png"),
    (Metric::AddMs, "add_one_service.png"),
];

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers a font once per process; whether text can be drawn.
fn font() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        let env = std::env::var("UVS_BENCH_FONT").ok();
        let candidates: Vec<String> = match env.as_deref() {
            // An explicit "none" draws without text (to test that path).
            Some("none") => Vec::new(),
            Some(p) => vec![p.to_string()],
            None => FONT_PATHS.iter().map(|s| s.to_string()).collect(),
        };
        for p in candidates {
            if let Ok(bytes) = std::fs::read(&p) {
                // The font lives as long as the process: plotters keeps a
                // reference to it in its registry.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        eprintln!(
            "uvs bench: no TrueType font found (install fonts-dejavu-core or set UVS_BENCH_FONT); plots have no text"
        );
        false
    })
}

fn color(p: Peer) -> RGBColor {
    match p {
        Peer::Iptables => RGBColor(214, 39, 40),
        Peer::Nftables => RGBColor(255, 127, 14),
        Peer::Routing => RGBColor(127, 127, 127),
        Peer::Uvs => RGBColor(31, 119, 180),
    }
}

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("plot: {e}"))
}

/// Draws every plot that has data into `dir`; the files written.
pub fn write_plots(dir: &Path, res: &Results, opts: &Opts) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (m, file) in PLOTS {
        let series: Vec<(Peer, Vec<(f64, f64)>)> = opts
            .peers
            .iter()
            .map(|&p| {
                let pts = opts
                    .services
                    .iter()
                    .filter_map(|&n| stat(res, p, n, m).map(|s| (n as f64, s.median)))
                    .collect::<Vec<_>>();
                (p, pts)
            })
            .filter(|(_, pts)| !pts.is_empty())
            .collect();
        if series.is_empty() {
            continue;
        }
        let path = dir.join(file);
        draw(&path, m, &series)?;
        out.push(path);
    }
    Ok(out)
}

fn draw(path: &Path, m: Metric, series: &[(Peer, Vec<(f64, f64)>)]) -> io::Result<()> {
    let text = font();
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    // A log axis from half the smallest N to twice the largest.
    let (x0, x1) = ((xmin / 2.0).max(0.5), xmax * 2.0);
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(0.0f64, f64::max);
    // Headroom above the highest point for the legend.
    let y1 = if ymax > 0.0 { ymax * 1.3 } else { 1.0 };

    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut b = ChartBuilder::on(&root);
    b.margin(20);
    if text {
        b.caption(
            format!("{} ({}) against N", m.title(), m.unit()),
            ("sans-serif", 24),
        )
        .x_label_area_size(50)
        .y_label_area_size(90);
    } else {
        b.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = b
        .build_cartesian_2d((x0..x1).log_scale(), 0f64..y1)
        .map_err(err)?;
    let xf = |x: &f64| format!("{x:.0}");
    let yf = |y: &f64| super::report::fmt(m, *y);
    if text {
        chart
            .configure_mesh()
            .x_desc("services (N, log scale)")
            .y_desc(m.unit())
            .label_style(("sans-serif", 16))
            .x_label_formatter(&xf)
            .y_label_formatter(&yf)
            .draw()
            .map_err(err)?;
    } else {
        // plotters' mesh measures label text even when it draws none, so
        // without a font only a frame is drawn.
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x0, 0.0), (x1, y1)],
                BLACK.stroke_width(1),
            )))
            .map_err(err)?;
    }
    for (peer, pts) in series {
        let c = color(*peer);
        let line = chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(3)))
            .map_err(err)?;
        if text {
            line.label(peer.name()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3))
            });
        }
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(err)?;
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
