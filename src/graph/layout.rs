//! Where each box and arrow of a drawn DAG goes: a layered (Sugiyama-style) layout by
//! [`dugong`], a port of dagre (what Mermaid draws flowcharts with). Orders are put in
//! ranks so that every arrow points down, the ranks ordered to cross few arrows, and an
//! arrow spanning several ranks bends around the boxes between, never through them.
//!
//! A job whose widest wave is wider than the job is deep is laid out left to right: its
//! waves become columns, so a 500-wide job reads as one long column to scroll down rather
//! than a row 100 000 pixels wide.

use dugong::graphlib::{Graph, GraphOptions};
use dugong::{EdgeLabel, GraphLabel, LayoutError, NodeLabel, RankDir};

/// A point of the drawing, in pixels from its top left corner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Rightwards.
    pub x: f64,
    /// Downwards.
    pub y: f64,
}

/// The size of a box or an arrow's label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Size {
    /// Its width.
    pub width: f64,
    /// Its height.
    pub height: f64,
}

/// An arrow to lay out: between boxes, by index, with a label of `label` size if any.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArrowSpec {
    /// The box it leaves.
    pub from: usize,
    /// The box it points at.
    pub to: usize,
    /// Its label's size, if it has one.
    pub label: Option<Size>,
}

/// Where everything goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Each box's centre, in the order given.
    pub centres: Vec<Point>,
    /// Each arrow's path, from its first box's edge to its second's, in the order given.
    pub paths: Vec<Vec<Point>>,
    /// Each arrow's label's centre, for those with a label.
    pub label_centres: Vec<Option<Point>>,
    /// The whole drawing's size.
    pub size: Size,
}

/// Space around the drawing.
const MARGIN: f64 = 16.0;

/// Lays out `boxes` of these sizes joined by `arrows` (which must not form a cycle: a
/// valid job's waits never do).
///
/// # Errors
///
/// dugong's, should its layout fail (an arrow it cannot end at a box).
pub fn lay_out(boxes: &[Size], arrows: &[ArrowSpec]) -> Result<Layout, LayoutError> {
    let left_to_right = wider_than_deep(boxes.len(), arrows);
    let mut graph: Graph<NodeLabel, EdgeLabel, GraphLabel> = Graph::new(GraphOptions {
        multigraph: false,
        ..GraphOptions::default()
    });
    graph.set_graph(GraphLabel {
        rankdir: if left_to_right {
            RankDir::LR
        } else {
            RankDir::TB
        },
        nodesep: if left_to_right { 12.0 } else { 24.0 },
        ranksep: if left_to_right { 64.0 } else { 48.0 },
        edgesep: 12.0,
        marginx: MARGIN,
        marginy: MARGIN,
        ..GraphLabel::default()
    });
    for (index, size) in boxes.iter().enumerate() {
        let label = NodeLabel {
            width: size.width,
            height: size.height,
            ..NodeLabel::default()
        };
        graph.set_node(index.to_string(), label);
    }
    for arrow in arrows {
        let size = arrow.label.unwrap_or(Size {
            width: 0.0,
            height: 0.0,
        });
        let label = EdgeLabel {
            width: size.width,
            height: size.height,
            ..EdgeLabel::default()
        };
        graph.set_edge_with_label(arrow.from.to_string(), arrow.to.to_string(), label);
    }
    dugong::layout(&mut graph)?;
    let point = |x: Option<f64>, y: Option<f64>| Point {
        x: x.unwrap_or_default(),
        y: y.unwrap_or_default(),
    };
    let centres = (0..boxes.len())
        .map(|index| {
            let node = graph.node(&index.to_string());
            node.map_or(point(None, None), |node| point(node.x, node.y))
        })
        .collect();
    let mut paths = Vec::with_capacity(arrows.len());
    let mut label_centres = Vec::with_capacity(arrows.len());
    for arrow in arrows {
        let edge = graph.edge(&arrow.from.to_string(), &arrow.to.to_string(), None);
        let path = edge.map_or_else(Vec::new, |edge| {
            (edge.points.iter())
                .map(|p| Point { x: p.x, y: p.y })
                .collect()
        });
        paths.push(path);
        let centre = edge.filter(|_| arrow.label.is_some());
        label_centres.push(centre.map(|edge| point(edge.x, edge.y)));
    }
    let label = graph.graph();
    Ok(Layout {
        centres,
        paths,
        label_centres,
        size: Size {
            width: label.width,
            height: label.height,
        },
    })
}

/// Whether the widest wave (orders the same number of waits from the start) holds more
/// orders than there are waves.
fn wider_than_deep(boxes: usize, arrows: &[ArrowSpec]) -> bool {
    let mut waiting_for = vec![Vec::new(); boxes];
    for arrow in arrows {
        waiting_for[arrow.to].push(arrow.from);
    }
    // An order may wait for one listed after it: waves are settled in topological order.
    let mut wave = vec![0usize; boxes];
    for index in topological(boxes, arrows) {
        wave[index] = (waiting_for[index].iter())
            .map(|&before| wave[before] + 1)
            .max()
            .unwrap_or(0);
    }
    let depth = wave.iter().max().map_or(0, |deepest| deepest + 1);
    let mut widths = vec![0usize; depth];
    for &w in &wave {
        widths[w] += 1;
    }
    widths.into_iter().max().unwrap_or(0) > depth.max(4)
}

/// The boxes in an order where each comes after every box it is waiting for (Kahn's).
fn topological(boxes: usize, arrows: &[ArrowSpec]) -> Vec<usize> {
    let mut waits = vec![0usize; boxes];
    let mut leads_to = vec![Vec::new(); boxes];
    for arrow in arrows {
        waits[arrow.to] += 1;
        leads_to[arrow.from].push(arrow.to);
    }
    let mut ready: Vec<usize> = (0..boxes).filter(|&i| waits[i] == 0).collect();
    let mut sorted = Vec::with_capacity(boxes);
    while let Some(index) = ready.pop() {
        sorted.push(index);
        for &next in &leads_to[index] {
            waits[next] -= 1;
            if waits[next] == 0 {
                ready.push(next);
            }
        }
    }
    sorted
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOX: Size = Size {
        width: 120.0,
        height: 40.0,
    };

    fn arrow(from: usize, to: usize) -> ArrowSpec {
        ArrowSpec {
            from,
            to,
            label: None,
        }
    }

    fn overlaps(a: Point, b: Point) -> bool {
        (a.x - b.x).abs() < BOX.width && (a.y - b.y).abs() < BOX.height
    }

    #[test]
    fn waits_point_down_and_boxes_do_not_overlap() {
        // A diamond with a skip arrow from top to bottom.
        let arrows = [
            arrow(0, 1),
            arrow(0, 2),
            arrow(1, 3),
            arrow(2, 3),
            arrow(0, 3),
        ];
        let layout = lay_out(&[BOX; 4], &arrows).unwrap();
        let c = &layout.centres;
        assert!(
            c[0].y < c[1].y && c[1].y < c[3].y && c[2].y < c[3].y,
            "{c:?}"
        );
        for i in 0..4 {
            for j in i + 1..4 {
                assert!(!overlaps(c[i], c[j]), "{i} and {j} overlap: {c:?}");
            }
        }
        // The skip arrow bends around the boxes of the rank it crosses.
        let skip = &layout.paths[4];
        assert!(skip.len() >= 3, "{skip:?}");
        for point in skip {
            for middle in [c[1], c[2]] {
                let inside = (point.x - middle.x).abs() < BOX.width / 2.0
                    && (point.y - middle.y).abs() < BOX.height / 2.0;
                assert!(!inside, "{point:?} is inside the box at {middle:?}");
            }
        }
        assert!(layout.size.width > BOX.width && layout.size.height > 3.0 * BOX.height);
    }

    #[test]
    fn a_wide_job_is_laid_out_left_to_right() {
        let arrows: Vec<_> = (1..=50).map(|i| arrow(0, i)).collect();
        let layout = lay_out(&[BOX; 51], &arrows).unwrap();
        assert!(layout.size.height > layout.size.width, "{:?}", layout.size);
        assert!(layout.centres[1].x > layout.centres[0].x);
    }

    #[test]
    fn labelled_arrows_get_room_for_their_label() {
        let label = Size {
            width: 80.0,
            height: 14.0,
        };
        let arrows = [ArrowSpec {
            from: 0,
            to: 1,
            label: Some(label),
        }];
        let layout = lay_out(&[BOX; 2], &arrows).unwrap();
        let centre = layout.label_centres[0].expect("a labelled arrow's label is placed");
        assert!(centre.y > layout.centres[0].y && centre.y < layout.centres[1].y);
    }
}
