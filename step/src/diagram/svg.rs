//! The picture, written as SVG text by hand: lanes side by side (a scripted peer's calls, the
//! lesson's calls), the packets as arrows between them, each side's TCP state as a tag on
//! its lane where it changes, a legend at the bottom. Only integers and fixed text: the
//! same rows always give the same bytes.

use std::collections::HashMap;
use std::fmt::Write;

use crate::model::{Diagram, Row, Span};

const LANE_GAP: i64 = 480;
const MARGIN: i64 = 260;
const TOP: i64 = 170;
const FONT: &str = "DejaVu Sans Mono, Menlo, Consolas, monospace";
const SANS: &str = "DejaVu Sans, Helvetica, Arial, sans-serif";
/// Width of a character of the 13px monospace font, in tenths of a pixel.
const CH13: i64 = 79;
const CH12: i64 = 73;

/// (stroke, light fill) of a lane, by its position.
const LANE_COLOURS: &[(&str, &str)] = &[
    ("#3730a3", "#e0e7ff"),
    ("#92400e", "#fef3c7"),
    ("#6b21a8", "#f3e8ff"),
    ("#155e75", "#cffafe"),
];

/// A packet's colour by kind, and what the legend says of it.
const KINDS: &[(&str, &str, &str)] = &[
    ("syn", "#1d4ed8", "SYN, SYN-ACK: the handshake"),
    ("data", "#15803d", "data (its length in bytes)"),
    ("ack", "#6b7280", "ACK alone"),
    ("fin", "#c2410c", "FIN: no more data from this side"),
    ("rst", "#dc2626", "RST: the connection is torn down"),
    ("lost", "#c026d3", "data a reset destroyed, never read"),
];

/// A UDP datagram: no connection, no state; drawn (and in the legend) only where one went.
const UDP: (&str, &str, &str) = ("udp", "#0e7490", "UDP datagram (its length in bytes)");

/// The kinds a picture's legend shows: the TCP ones, and UDP where datagrams went.
fn kinds(d: &Diagram) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut out = KINDS.to_vec();
    let udp = d
        .rows
        .iter()
        .any(|r| matches!(r, Row::Packet { kind, .. } if kind == UDP.0));
    if udp {
        out.push(UDP);
    }
    out
}

fn kind_colour(kind: &str) -> &'static str {
    KINDS
        .iter()
        .chain([UDP].iter())
        .find(|k| k.0 == kind)
        .map_or("#111827", |k| k.1)
}

/// (fill, text) of a TCP state's tag.
fn state_colours(state: &str) -> (&'static str, &'static str) {
    match state {
        "LISTEN" | "SYN_SENT" | "SYN_RCVD" => ("#dbeafe", "#1e3a8a"),
        "ESTABLISHED" => ("#dcfce7", "#14532d"),
        "FIN_WAIT_1" | "FIN_WAIT_2" | "CLOSING" | "TIME_WAIT" => ("#ffedd5", "#7c2d12"),
        "CLOSE_WAIT" | "LAST_ACK" => ("#ede9fe", "#4c1d95"),
        _ => ("#e5e7eb", "#1f2937"),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn width(text: &str, ch_tenths: i64) -> i64 {
    (text.chars().count() as i64 * ch_tenths + 9) / 10
}

fn row_height(row: &Row) -> i64 {
    match row {
        Row::Call { .. } => 30,
        Row::Packet { .. } => 44,
        Row::States(_) => 28,
        Row::Note(_) => 34,
    }
}

/// The SVG text of a diagram.
pub fn render(d: &Diagram) -> String {
    let n = d.lanes.len() as i64;
    let w = 2 * MARGIN + (n - 1) * LANE_GAP;
    let lane_x = |i: usize| MARGIN + i as i64 * LANE_GAP;
    let body: i64 = d.rows.iter().map(row_height).sum();
    let legend_top = TOP + body + 30;
    let kinds = kinds(d);
    // Rows of the legend's packet kinds beyond the first two (three a row).
    let legend_more = (kinds.len() as i64 + 2) / 3 - 2;
    let h = legend_top + 150 + legend_more * 26;
    let many = {
        let mut conns: Vec<char> = d
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::Packet { conn, .. } => Some(*conn),
                _ => None,
            })
            .collect();
        conns.sort();
        conns.dedup();
        conns.len() > 1
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}">"#
    );
    let _ = writeln!(s, "<title>{}</title>", esc(&d.title));
    s.push_str("<defs>\n");
    for (kind, colour, _) in &kinds {
        let _ = writeln!(
            s,
            r#"<marker id="head-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>"#
        );
    }
    s.push_str("</defs>\n");
    let _ = writeln!(
        s,
        r##"<rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/>"##
    );
    // The title (a mistake's name on the line below), then the subtitle wrapped to the width.
    let (title, more) = match d.title.split_once(" · ") {
        Some((t, m)) => (t.to_string(), Some(m.to_string())),
        None => (d.title.clone(), None),
    };
    let _ = writeln!(
        s,
        r##"<text x="24" y="36" font-family="{SANS}" font-size="22" font-weight="bold" fill="#111827">{}</text>"##,
        esc(&title)
    );
    let mut lines: Vec<String> = Vec::new();
    let per_line = ((w - 48) * 10 / 74) as usize;
    for word in d.subtitle.split(' ') {
        match lines.last_mut() {
            Some(l) if l.chars().count() + 1 + word.chars().count() <= per_line => {
                l.push(' ');
                l.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    let mut ty = 60;
    if let Some(m) = more {
        let _ = writeln!(
            s,
            r##"<text x="24" y="{ty}" font-family="{SANS}" font-size="16" font-weight="bold" fill="#c026d3">{}</text>"##,
            esc(&m)
        );
        ty += 20;
    }
    for l in lines.iter().take(2) {
        let _ = writeln!(
            s,
            r##"<text x="24" y="{ty}" font-family="{SANS}" font-size="13" fill="#4b5563">{}</text>"##,
            esc(l)
        );
        ty += 17;
    }

    // Lanes: a header box and a lifeline down to the legend.
    for (i, (name, role)) in d.lanes.iter().enumerate() {
        let x = lane_x(i);
        let (stroke, fill) = LANE_COLOURS[i % LANE_COLOURS.len()];
        let bw = (width(name, 88) + 40).max(220);
        let _ = writeln!(
            s,
            r#"<g class="lane" id="lane-{i}"><rect x="{}" y="104" width="{bw}" height="48" rx="8" fill="{fill}" stroke="{stroke}" stroke-width="2"/><text x="{x}" y="125" text-anchor="middle" font-family="{SANS}" font-size="16" font-weight="bold" fill="{stroke}">{}</text><text x="{x}" y="144" text-anchor="middle" font-family="{SANS}" font-size="12" fill="{stroke}">{}</text></g>"#,
            x - bw / 2,
            esc(name),
            esc(role)
        );
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="152" x2="{x}" y2="{}" stroke="{stroke}" stroke-width="1.5" stroke-dasharray="6 5"/>"#,
            legend_top - 10
        );
    }

    // Activation bars first (under everything): from a call's Begin row to its End row.
    let mut open: HashMap<(usize, usize), i64> = HashMap::new();
    let mut y = TOP;
    let mut bars = String::new();
    for row in &d.rows {
        if let Row::Call {
            lane, slot, span, ..
        } = row
        {
            let mid = y + row_height(row) / 2;
            match span {
                Span::Begin => {
                    open.insert((*lane, *slot), mid);
                }
                Span::End => {
                    if let Some(top) = open.remove(&(*lane, *slot)) {
                        let (stroke, fill) = LANE_COLOURS[lane % LANE_COLOURS.len()];
                        let x = lane_x(*lane) - 6 + *slot as i64 * 5;
                        let _ = writeln!(
                            bars,
                            r#"<rect class="blocked" x="{x}" y="{top}" width="12" height="{}" fill="{fill}" stroke="{stroke}" stroke-width="1"/>"#,
                            mid - top
                        );
                    }
                }
                Span::Whole => {}
            }
        }
        y += row_height(row);
    }
    s.push_str(&bars);

    let mut y = TOP;
    for row in &d.rows {
        let rh = row_height(row);
        match row {
            Row::Call {
                lane,
                slot,
                span,
                conn,
                text,
            } => {
                let mut label = String::new();
                let traced = d.lanes.get(*lane).is_some_and(|l| l.1.contains("traced"));
                if *slot > 0 && traced {
                    let _ = write!(label, "#{} ", slot + 1);
                }
                if let Some(c) = conn {
                    let _ = write!(label, "{c}: ");
                }
                label.push_str(text);
                if *span == Span::Begin {
                    label.push_str(" …");
                }
                let (stroke, fill) = LANE_COLOURS[lane % LANE_COLOURS.len()];
                let bw = width(&label, CH13) + 18;
                let x = lane_x(*lane);
                let colour = if text.contains("= -1 ")
                    || text.starts_with("-1 ")
                    || text.contains(" = -1")
                {
                    "#b91c1c"
                } else {
                    "#111827"
                };
                let _ = writeln!(
                    s,
                    r#"<g class="call" data-lane="{lane}"><rect x="{}" y="{}" width="{bw}" height="24" rx="4" fill="{fill}" stroke="{stroke}" stroke-width="1.2"/><text x="{x}" y="{}" text-anchor="middle" font-size="13" fill="{colour}">{}</text></g>"#,
                    x - bw / 2,
                    y + 3,
                    y + 20,
                    esc(&label)
                );
            }
            Row::Packet {
                conn,
                from,
                to,
                kind,
                label,
                detail,
            } => {
                let colour = kind_colour(kind);
                let (x1, x2) = (lane_x(*from), lane_x(*to));
                let dir = if x2 > x1 { 1 } else { -1 };
                let ly = y + 24;
                let dash = if kind == "lost" {
                    r#" stroke-dasharray="8 5""#
                } else {
                    ""
                };
                let sw = if kind == "rst" { 3 } else { 2 };
                let text = if many {
                    format!("{conn}: {label}")
                } else {
                    label.clone()
                };
                let _ = writeln!(
                    s,
                    r##"<g class="packet {kind}"><line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="{sw}"{dash} marker-end="url(#head-{kind})"/><text x="{}" y="{}" text-anchor="middle" font-size="13" font-weight="bold" fill="{colour}">{}</text><text x="{}" y="{}" text-anchor="middle" font-size="11" fill="#6b7280">{}</text></g>"##,
                    x1 + dir * 8,
                    x2 - dir * 8,
                    (x1 + x2) / 2,
                    ly - 7,
                    esc(&text),
                    (x1 + x2) / 2,
                    ly + 14,
                    esc(detail)
                );
            }
            Row::States(list) => {
                // Tags of one lane side by side, centred on its lifeline.
                let mut by_lane: Vec<(usize, Vec<String>)> = Vec::new();
                for (lane, conn, state) in list {
                    let t = match conn {
                        Some(c) => format!("{c} {state}"),
                        None => state.clone(),
                    };
                    match by_lane.iter_mut().find(|(l, _)| l == lane) {
                        Some((_, v)) => v.push(t),
                        None => by_lane.push((*lane, vec![t])),
                    }
                }
                for (lane, tags) in by_lane {
                    let widths: Vec<i64> = tags.iter().map(|t| width(t, CH12) + 20).collect();
                    let total: i64 = widths.iter().sum::<i64>() + 6 * (tags.len() as i64 - 1);
                    let mut x = lane_x(lane) - total / 2;
                    for (t, tw) in tags.iter().zip(widths) {
                        let state = t.rsplit(' ').next().unwrap_or(t);
                        let (fill, ink) = state_colours(state);
                        let _ = writeln!(
                            s,
                            r#"<g class="state" data-lane="{lane}"><rect x="{x}" y="{}" width="{tw}" height="22" rx="11" fill="{fill}" stroke="{ink}" stroke-width="1"/><text x="{}" y="{}" text-anchor="middle" font-size="12" font-weight="bold" font-style="italic" fill="{ink}">{}</text></g>"#,
                            y + 3,
                            x + tw / 2,
                            y + 18,
                            esc(t)
                        );
                        x += tw + 6;
                    }
                }
            }
            Row::Note(text) => {
                let _ = writeln!(
                    s,
                    r##"<g class="note"><line x1="16" y1="{}" x2="{}" y2="{}" stroke="#9ca3af" stroke-width="1" stroke-dasharray="2 4"/><rect x="{}" y="{}" width="{}" height="22" fill="#ffffff"/><text x="{}" y="{}" text-anchor="middle" font-family="{SANS}" font-size="13" font-style="italic" fill="#374151">{}</text></g>"##,
                    y + 17,
                    w - 16,
                    y + 17,
                    w / 2 - width(text, 72) / 2 - 10,
                    y + 6,
                    width(text, 72) + 20,
                    w / 2,
                    y + 22,
                    esc(text)
                );
            }
        }
        y += rh;
    }

    // The legend: what each colour and shape means.
    let _ = writeln!(
        s,
        r##"<g class="legend"><rect x="16" y="{legend_top}" width="{}" height="{}" rx="6" fill="#f9fafb" stroke="#d1d5db"/><text x="32" y="{}" font-family="{SANS}" font-size="14" font-weight="bold" fill="#111827">Legend</text>"##,
        w - 32,
        134 + legend_more * 26,
        legend_top + 24
    );
    let col = (w - 64) / 3;
    for (i, (kind, colour, what)) in kinds.iter().enumerate() {
        let cx = 32 + (i as i64 % 3) * col;
        let cy = legend_top + 50 + (i as i64 / 3) * 26;
        let dash = if *kind == "lost" {
            r#" stroke-dasharray="8 5""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r##"<line x1="{cx}" y1="{cy}" x2="{}" y2="{cy}" stroke="{colour}" stroke-width="2"{dash} marker-end="url(#head-{kind})"/><text x="{}" y="{}" font-family="{SANS}" font-size="13" fill="#111827">{}</text>"##,
            cx + 44,
            cx + 54,
            cy + 4,
            esc(what)
        );
    }
    let cy = legend_top + 102 + legend_more * 26;
    let (fill, ink) = state_colours("ESTABLISHED");
    let (lstroke, lfill) = LANE_COLOURS[1];
    let _ = writeln!(
        s,
        r##"<rect x="32" y="{}" width="112" height="22" rx="11" fill="{fill}" stroke="{ink}"/><text x="88" y="{}" text-anchor="middle" font-size="12" font-weight="bold" font-style="italic" fill="{ink}">STATE</text><text x="154" y="{}" font-family="{SANS}" font-size="13" fill="#111827">a side's TCP state, from here on</text>"##,
        cy - 11,
        cy + 4,
        cy + 4
    );
    let cx = 32 + col;
    let _ = writeln!(
        s,
        r##"<rect x="{cx}" y="{}" width="84" height="22" rx="4" fill="{lfill}" stroke="{lstroke}"/><text x="{}" y="{}" text-anchor="middle" font-size="12" fill="#111827">read = 6</text><text x="{}" y="{}" font-family="{SANS}" font-size="13" fill="#111827">a system call = its result</text>"##,
        cy - 11,
        cx + 42,
        cy + 4,
        cx + 94,
        cy + 4
    );
    let cx = 32 + 2 * col;
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="12" height="26" fill="{lfill}" stroke="{lstroke}"/><text x="{}" y="{}" font-family="{SANS}" font-size="13" fill="#111827">a call asleep in the kernel</text></g>"##,
        cx + 10,
        cy - 13,
        cx + 34,
        cy + 4
    );
    s.push_str("</svg>\n");
    s
}
