//! A DAG drawn as SVG with no other program: boxes placed by [`super::layout`], arrows
//! along the paths it routes, each box a link to its order's part of a page when it has
//! one. `sluice graph --format svg` draws a job with it, and the run report a run, its
//! boxes coloured by status.
//!
//! Everything drawn goes through [`maud`], which escapes every text and attribute value:
//! a name cannot end its element. Control characters (which XML forbids) are spaces.

use std::fmt::Write as _;

use dugong::LayoutError;
use maud::{Markup, PreEscaped, html};

use super::layout::{ArrowSpec, Layout, Point, Size, lay_out};
use super::{JobGraph, shortened};

/// The height of a line of a box's text, in pixels.
const LINE_HEIGHT: f64 = 16.0;
/// The space between a box's edge and its text.
const PADDING: f64 = 8.0;
/// About how wide a character of a box's text is (12 px sans-serif; a bold first line is
/// drawn 0.5 px wider).
const CHAR_WIDTH: f64 = 7.0;
/// The size of an arrow's label's text.
const LABEL_CHAR_WIDTH: f64 = 6.0;
/// The narrowest box.
const MIN_BOX_WIDTH: f64 = 96.0;
/// From how many boxes a drawing is compact: each box one line (its first) in a box of
/// one size, the arrows without heads or labels, drawn as one path for each kind — about
/// half the bytes, so a report of 10 000 orders stays small and quick to open.
pub const COMPACT_FROM: usize = 1000;
/// The characters of a compact box's line.
const COMPACT_CHARS: usize = 18;
/// A compact box.
const COMPACT_BOX: Size = Size {
    width: COMPACT_CHARS as f64 * CHAR_WIDTH + 2.0 * PADDING,
    height: LINE_HEIGHT + PADDING,
};

/// How tall a strip of a compact drawing on a page is.
const STRIP_HEIGHT: f64 = 1200.0;
/// The room a compact box's border takes around it.
const BOX_MARGIN: f64 = 2.0;

/// Where a drawing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// A file of its own: one `<svg>`.
    File,
    /// A page, where a compact drawing is cut into strips drawn only when scrolled to.
    Page,
}

/// A box of the drawing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// Its lines of text, the first (its name) in bold; each kept short by its maker.
    pub lines: Vec<String>,
    /// The CSS class it is drawn with (its status in a report).
    pub class: &'static str,
    /// Where it links to (`#o0001`), if anywhere.
    pub link: Option<String>,
}

/// An arrow between two boxes, by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrow {
    /// The box it leaves (the order waited for).
    pub from: usize,
    /// The box it points at (the order that waits).
    pub to: usize,
    /// Drawn dashed: a wait for outcomes (a `depends` condition).
    pub dashed: bool,
    /// Its label, if it has one.
    pub label: Option<String>,
}

/// The styles of a drawing: in its own `<style>`, so that a standalone SVG file looks the
/// same as one inside a page.
const STYLE: &str = "\
.dag{font:12px system-ui,sans-serif}\
.dag rect{fill:#f8fafc;stroke:#64748b;rx:5px}\
.dag rect+text{font-weight:600}\
.dag path{fill:none;stroke:#94a3b8;stroke-width:1.2;marker-end:url(#arrowhead)}\
.dag path.dashed{stroke-dasharray:5 4}\
.dag .label{fill:#475569;font-size:11px}\
.dag a:hover rect,.dag a:focus rect{stroke-width:2.5}\
.dag .succeeded rect{fill:#dcfce7;stroke:#16a34a}\
.dag .failed rect{fill:#fee2e2;stroke:#dc2626}\
.dag .timed_out rect{fill:#ffedd5;stroke:#ea580c}\
.dag .cancelled rect{fill:#e5e7eb;stroke:#4b5563}\
.dag .skipped rect{fill:#f1f5f9;stroke:#94a3b8;stroke-dasharray:4 3}\
.dag .running rect,.dag .dispatching rect{fill:#dbeafe;stroke:#2563eb}\
.dag .queued rect{fill:#fef9c3;stroke:#ca8a04}";

/// A job's DAG as an SVG file (`sluice graph --format svg`).
///
/// # Errors
///
/// The layout's, should it fail.
pub fn render(graph: &JobGraph) -> Result<String, LayoutError> {
    let boxes: Vec<Figure> = (graph.nodes.iter())
        .map(|node| Figure {
            lines: node.lines(),
            class: "order",
            link: None,
        })
        .collect();
    let arrows: Vec<Arrow> = (graph.edges.iter())
        .map(|edge| Arrow {
            from: edge.from,
            to: edge.to,
            dashed: edge.outcomes.is_some(),
            label: edge.outcomes.as_ref().map(|outcomes| outcomes.join(" / ")),
        })
        .collect();
    Ok(draw(&boxes, &arrows, Surface::File)?.into_string() + "\n")
}

/// The SVG element of `boxes` joined by `arrows`.
///
/// # Errors
///
/// The layout's, should it fail.
pub fn draw(boxes: &[Figure], arrows: &[Arrow], surface: Surface) -> Result<Markup, LayoutError> {
    let compact = boxes.len() >= COMPACT_FROM;
    let sizes: Vec<Size> = match compact {
        true => vec![COMPACT_BOX; boxes.len()],
        false => boxes.iter().map(box_size).collect(),
    };
    let specs: Vec<ArrowSpec> = (arrows.iter())
        .map(|arrow| ArrowSpec {
            from: arrow.from,
            to: arrow.to,
            label: (arrow.label.as_deref())
                .filter(|_| !compact)
                .map(label_size),
        })
        .collect();
    let layout = lay_out(&sizes, &specs)?;
    Ok(match compact {
        true => compact_svg(boxes, arrows, &layout, surface),
        false => svg(boxes, &sizes, arrows, &layout),
    })
}

/// An `<svg>` element `width` by `height`, showing the drawing from `top` down.
fn frame((width, height): (f64, f64), top: f64, class: &str, inside: Markup) -> Markup {
    let (width, height, top) = (px(width), px(height), px(top));
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class=(class) width=(width) height=(height)
            viewBox={ "0 " (top) " " (width) " " (height) } role="img" {
            (inside)
        }
    }
}

/// The drawings' style: in the drawing's own `<svg>` (a file looks as on a page), or once
/// before a compact drawing's parts.
fn style(compact: bool) -> Markup {
    html! {
        style {
            (PreEscaped(STYLE))
            @if compact {
                ".dag.compact rect{x:-" (PADDING) "px;y:-" (LINE_HEIGHT) "px;width:"
                (COMPACT_BOX.width) "px;height:" (COMPACT_BOX.height)
                "px}.dag.compact path{marker-end:none}"
            }
        }
    }
}

/// A drawing of [`COMPACT_FROM`] boxes or more (see there). On a page its boxes are cut
/// into strips about [`STRIP_HEIGHT`] tall, which the browser lays out only when they are
/// scrolled to, each with the arrows that cross it; an arrow crossing more than two
/// strips (a fan-out of a job laid out left to right) goes in one layer under them all
/// instead, so no arrow is written more than twice.
fn compact_svg(boxes: &[Figure], arrows: &[Arrow], layout: &Layout, surface: Surface) -> Markup {
    let (width, height) = (layout.size.width, layout.size.height);
    let placed = || boxes.iter().zip(&layout.centres);
    if surface == Surface::File {
        let mut paths = ArrowPaths::default();
        for (arrow, path) in arrows.iter().zip(&layout.paths) {
            paths.add(arrow, path);
        }
        let inside = html! {
            (style(true)) (paths.drawn())
            g class="orders" {
                @for (figure, centre) in placed() { (compact_box(figure, *centre)) }
            }
        };
        return frame((width, height), 0.0, "dag compact", inside);
    }
    let cuts = strip_cuts(&layout.centres, height);
    let strip_of = |y: f64| cuts.partition_point(|&cut| cut <= y).saturating_sub(1);
    let mut strips: Vec<(Vec<(&Figure, &Point)>, ArrowPaths)> = Vec::new();
    strips.resize_with(cuts.len(), Default::default);
    // A box a cut crosses (where no cut without one was found) is drawn in both strips.
    let half = COMPACT_BOX.height / 2.0 + BOX_MARGIN;
    for (figure, centre) in placed() {
        // (A cut below a box is on its bottom edge, rounded up: not across it.)
        let (first, last) = (strip_of(centre.y - half), strip_of(centre.y + half - 0.001));
        for (figures, _) in &mut strips[first..=last.max(first)] {
            figures.push((figure, centre));
        }
    }
    let mut long = ArrowPaths::default();
    for (arrow, path) in arrows.iter().zip(&layout.paths) {
        if path.is_empty() {
            continue;
        }
        let ys = path.iter().map(|point| point.y);
        let (top, bottom) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
        let (first, last) = (strip_of(top), strip_of(bottom));
        if last > first + 1 {
            long.add(arrow, path);
        } else {
            for (_, paths) in &mut strips[first..=last.max(first)] {
                paths.add(arrow, path);
            }
        }
    }
    html! {
        (style(true))
        div style={ "position:relative;width:" (px(width)) "px" } {
            div style="position:absolute;inset:0" {
                (frame((width, height), 0.0, "dag compact", long.drawn()))
            }
            @for (index, (figures, paths)) in strips.iter().enumerate() {
                @let top = cuts[index];
                @let tall = cuts.get(index + 1).copied().unwrap_or(height) - top;
                div style={
                    "position:relative;height:" (px(tall)) "px;content-visibility:auto;"
                    "contain-intrinsic-size:auto " (px(width)) "px " (px(tall)) "px"
                } {
                    (frame((width, tall), top, "dag compact", html! {
                        (paths.drawn())
                        g class="orders" {
                            @for (figure, centre) in figures { (compact_box(figure, **centre)) }
                        }
                    }))
                }
            }
        }
    }
}

/// Arrows of a compact drawing: one path of all the plain ones, one of the dashed.
#[derive(Debug, Default)]
struct ArrowPaths {
    solid: String,
    dashed: String,
}

impl ArrowPaths {
    fn add(&mut self, arrow: &Arrow, path: &[Point]) {
        let data = if arrow.dashed {
            &mut self.dashed
        } else {
            &mut self.solid
        };
        data.push_str(&path_data(path));
    }

    fn drawn(&self) -> Markup {
        html! {
            g class="arrows" {
                @if !self.solid.is_empty() { path d=(self.solid) {} }
                @if !self.dashed.is_empty() { path class="dashed" d=(self.dashed) {} }
            }
        }
    }
}

/// Where a compact drawing `height` tall is cut into strips: from 0, about every
/// [`STRIP_HEIGHT`], each cut on a whole pixel below any box it would cross (a strip shows
/// nothing of its boxes past its edges), unless none is found within another strip's
/// height (boxes of a left-to-right layout's columns, offset, can leave no gap).
fn strip_cuts(centres: &[Point], height: f64) -> Vec<f64> {
    let mut cuts = vec![0.0];
    if !height.is_finite() {
        return cuts;
    }
    let half = COMPACT_BOX.height / 2.0 + BOX_MARGIN;
    let mut spans: Vec<(f64, f64)> = centres.iter().map(|c| (c.y - half, c.y + half)).collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut taken: Vec<(f64, f64)> = Vec::new();
    for (top, bottom) in spans {
        match taken.last_mut() {
            Some(last) if top <= last.1 => last.1 = last.1.max(bottom),
            _ => taken.push((top, bottom)),
        }
    }
    let mut next = STRIP_HEIGHT;
    while next < height {
        let under = taken.partition_point(|&(top, _)| top < next);
        let cut = match under.checked_sub(1).map(|index| taken[index]) {
            Some((_, bottom)) if bottom > next && bottom < next + STRIP_HEIGHT => bottom.ceil(),
            _ => next.ceil(),
        };
        if cut >= height {
            break;
        }
        cuts.push(cut);
        next = cut + STRIP_HEIGHT;
    }
    cuts
}

/// A box of a compact drawing: its one line at its place, its rectangle around it by the
/// style.
fn compact_box(figure: &Figure, centre: Point) -> Markup {
    let x = centre.x - COMPACT_BOX.width / 2.0 + PADDING;
    let y = centre.y - COMPACT_BOX.height / 2.0 + LINE_HEIGHT;
    let transform = format!("translate({} {})", px(x), px(y));
    let line = figure
        .lines
        .first()
        .map(|line| shortened(line, COMPACT_CHARS));
    let inside = html! { rect {} text { (printable(&line.unwrap_or_default())) } };
    html! {
        @if let Some(link) = &figure.link {
            a href=(link) class=(figure.class) transform=(transform) { (inside) }
        } @else {
            g class=(figure.class) transform=(transform) { (inside) }
        }
    }
}

fn svg(boxes: &[Figure], sizes: &[Size], arrows: &[Arrow], layout: &Layout) -> Markup {
    let inside = html! {
        (style(false))
        defs {
            marker id="arrowhead" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
                markerHeight="7" orient="auto" {
                path d="M0 0L10 5L0 10z" style="fill:#94a3b8;stroke:none;marker-end:none" {}
            }
        }
        g class="arrows" {
            @for (arrow, path) in arrows.iter().zip(&layout.paths) {
                path class=[arrow.dashed.then_some("dashed")] d=(curve_data(path)) {}
            }
        }
        g class="labels" {
            @for (arrow, centre) in arrows.iter().zip(&layout.label_centres) {
                @if let (Some(label), Some(centre)) = (&arrow.label, centre) {
                    text class="label" x=(px(centre.x)) y=(px(centre.y + 4.0))
                        text-anchor="middle" { (printable(label)) }
                }
            }
        }
        g class="orders" {
            @for ((figure, size), centre) in boxes.iter().zip(sizes).zip(&layout.centres) {
                (figure_box(figure, *size, *centre))
            }
        }
    };
    frame((layout.size.width, layout.size.height), 0.0, "dag", inside)
}

/// One box, its top left corner moved to its place.
fn figure_box(figure: &Figure, size: Size, centre: Point) -> Markup {
    let (left, top) = (centre.x - size.width / 2.0, centre.y - size.height / 2.0);
    let transform = format!("translate({} {})", px(left), px(top));
    let inside = html! {
        rect width=(px(size.width)) height=(px(size.height)) {}
        @for (index, line) in figure.lines.iter().enumerate() {
            text x=(PADDING) y=(px(PADDING + LINE_HEIGHT * (index as f64 + 1.0) - 4.0)) {
                (printable(line))
            }
        }
    };
    html! {
        @if let Some(link) = &figure.link {
            a href=(link) class=(figure.class) transform=(transform) { (inside) }
        } @else {
            g class=(figure.class) transform=(transform) { (inside) }
        }
    }
}

fn box_size(figure: &Figure) -> Size {
    let widest = (figure.lines.iter())
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(0);
    Size {
        width: (widest as f64 * CHAR_WIDTH + 2.0 * PADDING).max(MIN_BOX_WIDTH),
        height: figure.lines.len().max(1) as f64 * LINE_HEIGHT + PADDING,
    }
}

fn label_size(label: &str) -> Size {
    Size {
        width: label.chars().count() as f64 * LABEL_CHAR_WIDTH + 4.0,
        height: LINE_HEIGHT,
    }
}

/// A path's `d`: straight lines through its points, less those on a straight line between
/// their neighbours.
fn path_data(points: &[Point]) -> String {
    let kept = bends(points);
    let mut data = String::with_capacity(kept.len() * 10);
    for (index, point) in kept.iter().enumerate() {
        let command = if index == 0 { 'M' } else { 'L' };
        let _ = write!(data, "{command}{} {}", px(point.x), px(point.y));
    }
    data
}

/// A path's `d`: a smooth curve from its first point to its last, bending towards each
/// point between (through the midpoints between them), as dagre's drawings do — an arrow
/// that bends around a box curves rather than kinks.
fn curve_data(points: &[Point]) -> String {
    let kept = bends(points);
    let Some((first, rest)) = kept.split_first() else {
        return String::new();
    };
    let mut data = format!("M{} {}", px(first.x), px(first.y));
    if let [only] = rest {
        let _ = write!(data, "L{} {}", px(only.x), px(only.y));
        return data;
    }
    for (index, bend) in rest.iter().enumerate().take(rest.len().saturating_sub(1)) {
        let next = rest[index + 1];
        let to = match index + 2 == rest.len() {
            true => next,
            false => Point {
                x: (bend.x + next.x) / 2.0,
                y: (bend.y + next.y) / 2.0,
            },
        };
        let _ = write!(
            data,
            "Q{} {} {} {}",
            px(bend.x),
            px(bend.y),
            px(to.x),
            px(to.y)
        );
    }
    data
}

/// `points` less those on a straight line between their neighbours.
fn bends(points: &[Point]) -> Vec<Point> {
    let mut kept: Vec<Point> = Vec::with_capacity(points.len());
    for (index, &point) in points.iter().enumerate() {
        if let (Some(&before), Some(&after)) = (kept.last(), points.get(index + 1)) {
            let (dx, dy) = (after.x - before.x, after.y - before.y);
            let length = dx.hypot(dy);
            let off_line = ((point.x - before.x) * dy - (point.y - before.y) * dx).abs();
            if length > 0.0 && off_line / length < 0.5 {
                continue;
            }
        }
        kept.push(point);
    }
    kept
}

/// A coordinate, to the pixel.
fn px(value: f64) -> i64 {
    value.round() as i64
}

/// `text` with the characters XML forbids (control characters) as spaces.
fn printable(text: &str) -> String {
    super::escaped(text, |_, _| false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(name: &str) -> Figure {
        Figure {
            lines: vec![name.to_owned(), "codebuild · make".to_owned()],
            class: "succeeded",
            link: Some("#o0001".to_owned()),
        }
    }

    #[test]
    fn boxes_arrows_and_labels_are_drawn_escaped() {
        let boxes = [figure("<script>alert(1)</script>"), figure("b\"&'\u{1}")];
        let arrows = [Arrow {
            from: 0,
            to: 1,
            dashed: true,
            label: Some("failed </text>".to_owned()),
        }];
        let svg = draw(&boxes, &arrows, Surface::File).unwrap().into_string();
        assert!(
            svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{svg}"
        );
        assert!(svg.contains("b&quot;&amp;' "), "{svg}");
        assert!(svg.contains("failed &lt;/text&gt;"), "{svg}");
        assert!(!svg.contains("<script"), "{svg}");
        assert_eq!(svg.matches("<rect ").count(), 2);
        assert_eq!(svg.matches("<path class=\"dashed\"").count(), 1);
        assert_eq!(
            svg.matches("<a href=\"#o0001\" class=\"succeeded\"")
                .count(),
            2
        );
    }

    #[test]
    fn points_on_a_straight_line_are_left_out_of_paths() {
        let p = |x, y| Point { x, y };
        assert_eq!(
            path_data(&[p(0.0, 0.0), p(5.0, 5.2), p(10.0, 10.0)]),
            "M0 0L10 10"
        );
        assert_eq!(
            path_data(&[p(0.0, 0.0), p(0.0, 10.0), p(10.0, 20.0)]),
            "M0 0L0 10L10 20"
        );
        assert_eq!(path_data(&[p(3.0, 4.0)]), "M3 4");
    }

    #[test]
    fn bent_arrows_curve_through_the_midpoints_of_their_bends() {
        let p = |x, y| Point { x, y };
        assert_eq!(curve_data(&[p(0.0, 0.0), p(10.0, 0.0)]), "M0 0L10 0");
        assert_eq!(
            curve_data(&[p(0.0, 0.0), p(10.0, 10.0), p(0.0, 20.0)]),
            "M0 0Q10 10 0 20"
        );
        assert_eq!(
            curve_data(&[p(0.0, 0.0), p(10.0, 10.0), p(10.0, 30.0), p(0.0, 40.0)]),
            "M0 0Q10 10 10 20Q10 30 0 40"
        );
    }

    /// A compact drawing of one order that `n - 1` wait for, on a page.
    fn fan_out(n: usize) -> String {
        let boxes: Vec<Figure> = (0..n).map(|i| figure(&format!("order-{i}"))).collect();
        let arrows: Vec<Arrow> = (1..n)
            .map(|to| Arrow {
                from: 0,
                to,
                dashed: false,
                label: None,
            })
            .collect();
        draw(&boxes, &arrows, Surface::Page).unwrap().into_string()
    }

    #[test]
    fn a_large_drawing_is_cut_into_strips_holding_each_box_once() {
        let page = fan_out(COMPACT_FROM);
        assert_eq!(page.matches("<a href=").count(), COMPACT_FROM);
        assert_eq!(page.matches("order-999<").count(), 1);
        assert!(page.matches("content-visibility:auto").count() > 10);
        // The fan-out's arrows cross every strip: written once, in the layer under them.
        let twice = fan_out(2 * COMPACT_FROM);
        let growth = twice.len() as f64 / page.len() as f64;
        assert!(
            growth < 2.2,
            "{growth}: {} then {} bytes",
            page.len(),
            twice.len()
        );
    }

    #[test]
    fn strips_are_cut_between_boxes_else_every_strip_height() {
        let at = |y| Point { x: 0.0, y };
        // A box across 1 200: the cut goes below it.
        let cuts = strip_cuts(&[at(1195.0), at(2500.0)], 3000.0);
        assert_eq!(cuts, [0.0, 1209.0, 2409.0]);
        // Boxes everywhere: cut every strip's height all the same, but below the last box
        // when it is within a strip's height.
        let packed: Vec<Point> = (0..400).map(|i| at(f64::from(i) * 10.0)).collect();
        assert_eq!(strip_cuts(&packed, 4000.0), [0.0, 1200.0, 2400.0]);
        assert_eq!(strip_cuts(&packed, 4100.0), [0.0, 1200.0, 2400.0, 4004.0]);
        assert_eq!(strip_cuts(&packed, f64::INFINITY), [0.0]);
    }

    #[test]
    fn boxes_are_as_wide_as_their_longest_line() {
        let narrow = box_size(&figure("a"));
        let wide = box_size(&figure(&"x".repeat(40)));
        assert_eq!(
            narrow.width,
            MIN_BOX_WIDTH.max(16.0 * CHAR_WIDTH + 2.0 * PADDING)
        );
        assert!(wide.width >= 40.0 * CHAR_WIDTH);
        assert_eq!(narrow.height, 2.0 * LINE_HEIGHT + PADDING);
    }
}
