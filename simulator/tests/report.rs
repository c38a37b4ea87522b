//! The HTML report as a browser shows it: Debian's Chromium, headless, takes
//! a screenshot of the built-in scenario's report, and the picture is checked
//! for what a reader needs: every chart drawn, data lines and the red
//! objective lines visible, legends in their own column right of each plot.
//!
//! Skipped, with the reason printed, where no Chromium is installed (`.ci/run`
//! installs Debian's `chromium`); `SPILLWAY_CHROMIUM` names another binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use spillway_sim::scenario::{self, Dur};
use spillway_sim::{report, simulate};

fn chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SPILLWAY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

const WIDTH: u32 = 1100;
const HEIGHT: u32 = 6000;

/// Renders `page` headless; returns the screenshot's RGB rows.
fn screenshot(browser: &Path, page: &Path, dir: &Path) -> (u32, u32, Vec<u8>) {
    let png = dir.join("report.png");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--window-size={WIDTH},{HEIGHT}"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium starts");
    assert!(
        png.exists(),
        "no screenshot; chromium said: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let rgb: Vec<u8> = buf[..info.buffer_size()]
        .chunks(channels)
        .flat_map(|px| px[..3].to_vec())
        .collect();
    (info.width, info.height, rgb)
}

fn near(px: &[u8], c: (u8, u8, u8)) -> bool {
    px[0].abs_diff(c.0) < 40 && px[1].abs_diff(c.1) < 40 && px[2].abs_diff(c.2) < 40
}

#[test]
fn the_report_renders_in_a_browser_with_its_charts_lines_and_legends() {
    let Some(browser) = chromium() else {
        println!("skipped: no Chromium (install Debian's chromium, or set SPILLWAY_CHROMIUM)");
        return;
    };
    let mut compiled = scenario::builtin().unwrap();
    compiled.scenario.duration = Dur::secs(6 * 3600);
    let outcome = simulate(&compiled, &mut |_| {}).unwrap();
    let dir = std::env::temp_dir().join(format!("spillway-report-shot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    report::write_dir(&dir, &outcome, &compiled).unwrap();
    let html = std::fs::read_to_string(dir.join("index.html")).unwrap();
    let charts = report::charts(&outcome, &compiled).len();
    assert_eq!(html.matches("<svg").count(), charts);
    assert!(html.contains("Assumptions") && html.contains("USD"));

    let (w, h, rgb) = screenshot(&browser, &dir.join("index.html"), &dir);
    assert_eq!((w, h), (WIDTH, HEIGHT));
    let px = |x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        &rgb[i..i + 3]
    };
    // Every chart's frame, lines and legend make rows of non-white pixels;
    // a page whose SVG failed to render would be mostly blank.
    let busy_rows = (0..h)
        .filter(|&y| (0..w).filter(|&x| !near(px(x, y), (255, 255, 255))).count() > 20)
        .count();
    assert!(busy_rows > 3000, "only {busy_rows} rows drawn");
    // Data lines (the first palette colour) and objectives (red) are visible.
    let count = |c| {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| near(px(x, y), c))
            .count()
    };
    assert!(count((31, 119, 180)) > 2000, "few data-line pixels");
    assert!(count((214, 0, 0)) > 500, "no objective lines");
    // Legends: right of each plot there is ink (legend swatches and text)
    // in the column the layout reserves for them, and no data line
    // crosses into it: the blue of the first series appears there only as
    // legend swatches (short, within the swatch's 30 px).
    // The page has a 24 px margin; each SVG is 1,000 px wide, its plot the
    // left 750 px (ending at 742 with its margin), the legend the rest.
    let (column_start, column_end) = (24 + 746, 24 + 1000);
    let mut swatch_rows = 0;
    for y in 0..h {
        let blue: Vec<u32> = (column_start..column_end)
            .filter(|&x| near(px(x, y), (31, 119, 180)))
            .collect();
        if let (Some(a), Some(b)) = (blue.first(), blue.last()) {
            assert!(
                b - a <= 40,
                "a blue run {a}..{b} at row {y} in the legend column"
            );
            swatch_rows += 1;
        }
    }
    assert!(swatch_rows >= 3, "no legend swatches in the legend column");
    std::fs::remove_dir_all(&dir).ok();
}
