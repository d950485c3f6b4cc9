//! The report's PNG plots, drawn with plotters' bitmap backend: latency
//! distributions of scenarios 1 and 2 (as cumulative curves, one point per
//! run), API requests per second and daemon RSS against the number of
//! Services. Text is rendered with a TrueType font read from Debian's
//! `fonts-dejavu-core` (`scripts/install-deps.sh` installs it).

use crate::bench::report::{LATENCY_GOAL_MS, Plot};
use crate::bench::results::{Results, Series, SubjectResults};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Where the font is looked for, first found wins.
const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Why the plots were not drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// No font to write labels with.
    #[error(
        "no TrueType font for the plots' labels (looked for {0}); install Debian's fonts-dejavu-core (scripts/install-deps.sh does)"
    )]
    NoFont(String),
    /// plotters failed to draw or write a file.
    #[error("drawing {file}: {message}")]
    Draw {
        /// The PNG being drawn.
        file: String,
        /// plotters' error.
        message: String,
    },
}

const SIZE: (u32, u32) = (960, 540);
const KVIP: RGBColor = RGBColor(31, 119, 180);
const KVIP_MEMBERSHIP: RGBColor = RGBColor(44, 160, 44);
const KUBE_VIP: RGBColor = RGBColor(230, 120, 20);
const GOAL: RGBColor = RGBColor(200, 30, 30);

fn register_font() -> Result<(), PlotError> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let Some(bytes) = FONT_PATHS.iter().find_map(|p| std::fs::read(p).ok()) else {
            return Err(FONT_PATHS.join(", "));
        };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "the font file is not a usable TrueType font".to_string())
    })
    .clone()
    .map_err(PlotError::NoFont)
}

/// `c` moved towards white by `share` (0 keeps it, 1 is white).
fn lighten(c: RGBColor, share: f64) -> RGBColor {
    let mix = |v: u8| {
        let v = f64::from(v);
        (v + (255.0 - v) * share.clamp(0.0, 1.0)).round() as u8
    };
    RGBColor(mix(c.0), mix(c.1), mix(c.2))
}

fn color(subject: &str) -> RGBColor {
    match subject {
        "kvip" => KVIP,
        "kvip membership" => KVIP_MEMBERSHIP,
        _ => KUBE_VIP,
    }
}

fn ran(r: &Results) -> impl Iterator<Item = &SubjectResults> {
    r.subjects.iter().filter(|s| s.unavailable.is_none())
}

/// Draws every plot into `dir`; returns what was written.
pub fn draw_all(r: &Results, dir: &Path) -> Result<Vec<Plot>, PlotError> {
    register_font()?;
    let mut plots = Vec::new();
    let create: Vec<(String, &Series, RGBColor)> = ran(r)
        .map(|s| (s.subject.clone(), &s.create, color(&s.subject)))
        .collect();
    let file = "create_latency.png";
    latency_cdf(
        &dir.join(file),
        "1. Service create → first answer (Local)",
        &create,
    )
    .map_err(|message| PlotError::Draw {
        file: file.into(),
        message,
    })?;
    plots.push(Plot {
        file: file.into(),
        caption: "Service create → first answer: every run, as a cumulative distribution".into(),
    });
    let mut migration: Vec<(String, &Series, RGBColor)> = Vec::new();
    for s in ran(r) {
        let base = color(&s.subject);
        migration.push((
            format!("{}: from old pod deletion", s.subject),
            &s.migration_from_delete,
            base,
        ));
        migration.push((
            format!("{}: from new pod Ready", s.subject),
            &s.migration_from_ready,
            lighten(base, 0.5),
        ));
    }
    let file = "migration_latency.png";
    latency_cdf(
        &dir.join(file),
        "2. Graceful migration (Local) → first answer from the new node",
        &migration,
    )
    .map_err(|message| PlotError::Draw {
        file: file.into(),
        message,
    })?;
    plots.push(Plot {
        file: file.into(),
        caption: "Graceful migration: every run, as a cumulative distribution".into(),
    });
    if ran(r).any(|s| s.scale.iter().any(|st| st.api.is_some())) {
        let file = "api_requests.png";
        api_requests(r, &dir.join(file)).map_err(|message| PlotError::Draw {
            file: file.into(),
            message,
        })?;
        plots.push(Plot {
            file: file.into(),
            caption: "API requests per second at steady state vs number of Services".into(),
        });
        let file = "rss.png";
        rss(r, &dir.join(file)).map_err(|message| PlotError::Draw {
            file: file.into(),
            message,
        })?;
        plots.push(Plot {
            file: file.into(),
            caption: "Daemon RSS per node vs number of Services".into(),
        });
    }
    Ok(plots)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// One cumulative step curve per series, a dot per run, and the goal line.
fn latency_cdf(
    path: &Path,
    title: &str,
    series: &[(String, &Series, RGBColor)],
) -> Result<(), String> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let longest = series
        .iter()
        .flat_map(|(_, s, _)| s.samples_ms.iter().copied())
        .fold(LATENCY_GOAL_MS, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..longest * 1.1, 0f64..100f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("milliseconds")
        .y_desc("% of runs at or below")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            [(LATENCY_GOAL_MS, 0.0), (LATENCY_GOAL_MS, 100.0)],
            GOAL.stroke_width(2),
        ))
        .map_err(err)?
        .label(format!("goal: median < {LATENCY_GOAL_MS:.0} ms"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GOAL.stroke_width(2)));
    for (name, s, colour) in series {
        let mut sorted = s.samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len().max(1) as f64;
        let mut steps = vec![(0.0, 0.0)];
        let mut dots = Vec::new();
        for (i, x) in sorted.iter().enumerate() {
            let below = 100.0 * i as f64 / n;
            let at = 100.0 * (i + 1) as f64 / n;
            steps.push((*x, below));
            steps.push((*x, at));
            dots.push((*x, at));
        }
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(steps, colour.stroke_width(2)))
            .map_err(err)?
            .label(format!("{name} (n={})", sorted.len()))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        chart
            .draw_series(dots.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn scale_axis(r: &Results) -> std::ops::Range<f64> {
    let most = r.settings.scale.iter().copied().max().unwrap_or(1).max(1);
    0.7..(most as f64 * 1.5)
}

/// Requests per second (total, on Leases, and the no-daemon baseline) vs Services.
fn api_requests(r: &Results, path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = ran(r)
        .flat_map(|s| s.scale.iter().filter_map(|st| st.api.as_ref()))
        .map(|a| a.total_per_second)
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "4. API requests/s at the API server, steady state",
            ("sans-serif", 24),
        )
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(scale_axis(r).log_scale(), 0f64..top * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("LoadBalancer Services")
        .y_desc("requests per second")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    for s in ran(r) {
        let c = color(&s.subject);
        let points = |f: &dyn Fn(&crate::bench::results::ApiRates) -> f64| -> Vec<(f64, f64)> {
            s.scale
                .iter()
                .filter_map(|st| st.api.as_ref().map(|a| (st.services as f64, f(a))))
                .collect()
        };
        let total = points(&|a| a.total_per_second);
        let leases = points(&|a| a.resource("leases"));
        chart
            .draw_series(LineSeries::new(total.clone(), c.stroke_width(3)))
            .map_err(err)?
            .label(format!("{}: all requests", s.subject))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
        chart
            .draw_series(total.into_iter().map(|p| Circle::new(p, 5, c.filled())))
            .map_err(err)?;
        let light = lighten(c, 0.5);
        chart
            .draw_series(LineSeries::new(leases.clone(), light.stroke_width(2)))
            .map_err(err)?
            .label(format!("{}: on Leases", s.subject))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], light.stroke_width(2)));
        chart
            .draw_series(
                leases
                    .into_iter()
                    .map(|p| TriangleMarker::new(p, 6, light.filled())),
            )
            .map_err(err)?;
        if let Some(b) = &s.baseline {
            let range = scale_axis(r);
            let grey = RGBColor(120, 120, 120);
            chart
                .draw_series(LineSeries::new(
                    [
                        (range.start, b.total_per_second),
                        (range.end, b.total_per_second),
                    ],
                    grey.stroke_width(1),
                ))
                .map_err(err)?
                .label(format!("{}: lab baseline, no daemon", s.subject))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], grey.stroke_width(1))
                });
        }
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// RSS of each node's daemon vs Services, with the idle reading as a label.
fn rss(r: &Results, path: &Path) -> Result<(), String> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let top = ran(r)
        .flat_map(|s| {
            s.scale
                .iter()
                .flat_map(|st| st.usage.iter())
                .chain(s.idle.iter())
        })
        .map(|u| mb(u.rss_kib))
        .fold(15.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption("4. Daemon RSS per node, steady state", ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(scale_axis(r).log_scale(), 0f64..top * 1.15)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("LoadBalancer Services")
        .y_desc("RSS, MB (10^6 bytes)")
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    let range = scale_axis(r);
    chart
        .draw_series(LineSeries::new(
            [(range.start, 15.0), (range.end, 15.0)],
            GOAL.stroke_width(1),
        ))
        .map_err(err)?
        .label("15 MB (the idle goal)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GOAL.stroke_width(1)));
    for s in ran(r) {
        for (k, node) in ["cp1", "worker1", "worker2"].iter().enumerate() {
            let c = lighten(color(&s.subject), 0.25 * k as f64);
            let points: Vec<(f64, f64)> = s
                .scale
                .iter()
                .filter_map(|st| {
                    st.usage
                        .iter()
                        .find(|u| u.node == *node)
                        .map(|u| (st.services as f64, mb(u.rss_kib)))
                })
                .collect();
            let idle = s
                .idle
                .iter()
                .find(|u| u.node == *node)
                .map_or("—".to_string(), |u| format!("{:.1}", mb(u.rss_kib)));
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(err)?
                .label(format!("{} on {node} (idle {idle} MB)", s.subject))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
            chart
                .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}
