//! Building frames from the tree (`Node::frame`) and the frame's stable shape hash.

use std::collections::HashMap;

use super::{Node, NodeKind, TaskExec, TaskSpec};
use crate::frame::FrameNode;

impl FrameNode {
    /// The frame of `node`: its structure as rendered.
    pub fn of(node: &Node) -> Self {
        Self::build(node, true)
    }

    fn build(node: &Node, mounted: bool) -> Self {
        let mut f = FrameNode::new(node.tag(), mounted);
        let props = &mut f.props;
        match node.kind() {
            NodeKind::Workflow(p) => {
                f.label = Some(p.name.clone());
                if p.cache {
                    props.push("cache".into());
                }
                if let Some(m) = p.max_concurrency {
                    props.push(format!("max_concurrency={m}"));
                }
            }
            NodeKind::Sequence(p) | NodeKind::Parallel(p) => {
                if let Some(m) = p.max_concurrency {
                    props.push(format!("max_concurrency={m}"));
                }
                if p.skip_if {
                    props.push("skip_if".into());
                }
            }
            NodeKind::Ralph(p) => {
                f.id = Some(p.id.clone());
                props.push(format!("until={}", p.until));
                props.push(format!("max_iterations={}", p.max_iterations));
                props.push(format!("on_max_reached={:?}", p.on_max_reached));
            }
            NodeKind::Branch(p) => props.push(format!("if={}", p.cond)),
            NodeKind::Phase(p) | NodeKind::Step(p) => {
                f.label = Some(p.name.clone());
                if p.skip_if {
                    props.push("skip_if".into());
                }
            }
            NodeKind::Task(t) => {
                f.id = Some(t.id.to_string());
                f.label.clone_from(&t.label);
                props.push(format!("output={}", t.output.short_name()));
                props.push(match &t.exec {
                    TaskExec::Agent(a) => {
                        f.agent = Some(a.name().to_owned());
                        format!("agent={}", a.name())
                    }
                    TaskExec::Compute(_) => "run".to_owned(),
                    TaskExec::Value(_) => "value".to_owned(),
                    TaskExec::Missing => "no-exec".to_owned(),
                });
                if t.retries > 0 {
                    props.push(format!("retries={}", t.retries));
                }
                if let Some(d) = t.timeout {
                    props.push(format!("timeout={d:?}"));
                }
                if t.skip_if {
                    props.push("skip_if".into());
                }
                if t.continue_on_fail {
                    props.push("continue_on_fail".into());
                }
                if t.needs_approval {
                    props.push("needs_approval".into());
                }
            }
            NodeKind::Fragment => {}
        }
        if let NodeKind::Branch(_) = node.kind() {
            // Both arms, marked, so a reader can tell which one is mounted.
            let chosen = node.mounted_children().first();
            for (arm, c) in ["then", "else"].iter().zip(node.children()) {
                if matches!(c.kind(), NodeKind::Fragment) && c.children().is_empty() {
                    continue;
                }
                let arm_mounted = mounted && chosen.is_some_and(|m| std::ptr::eq(m, c));
                let mut a = FrameNode::new(arm, arm_mounted);
                // An arm's nodes sit directly under it (its fragment is transparent anyway).
                match c.kind() {
                    NodeKind::Fragment => a
                        .children
                        .extend(c.children().iter().map(|n| Self::build(n, arm_mounted))),
                    _ => a.children.push(Self::build(c, arm_mounted)),
                }
                f.children.push(a);
            }
            if f.children.is_empty() && !node.children().is_empty() {
                // Only empty arms: still not a self-closing tag in the text view.
                f.children.push(FrameNode::new("Fragment", mounted));
            }
        } else {
            f.children = node
                .children()
                .iter()
                .map(|c| Self::build(c, mounted))
                .collect();
        }
        f
    }
}

/// A stable 64-bit hash of the tree's shape (tags, task and loop ids, branch conditions, group
/// names, child counts): FNV-1a over explicit little-endian bytes, so the value persisted with a
/// frame is the same on every platform and Rust version.
pub(crate) fn shape_hash(node: &Node) -> u64 {
    let mut h = Fnv64::new();
    hash_shape(node, &mut h);
    h.0
}

fn hash_shape(node: &Node, h: &mut Fnv64) {
    h.str(node.tag());
    match node.kind() {
        NodeKind::Task(t) => h.str(&t.id),
        NodeKind::Ralph(r) => h.str(&r.id),
        NodeKind::Branch(b) => h.bytes(&[u8::from(b.cond)]),
        NodeKind::Phase(n) | NodeKind::Step(n) => h.str(&n.name),
        _ => {}
    }
    h.bytes(&(node.children().len() as u64).to_le_bytes());
    for c in node.children() {
        hash_shape(c, h);
    }
}

/// FNV-1a, 64 bits (the published offset basis and prime).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// A string, length-prefixed so that adjacent strings cannot run into each other.
    fn str(&mut self, s: &str) {
        self.bytes(&(s.len() as u64).to_le_bytes());
        self.bytes(s.as_bytes());
    }
}

/// The state annotation of [`Node::to_tree_string_with`], by task id.
pub(super) fn task_state<'a>(
    tree: &'a Node,
    state: &'a dyn Fn(&TaskSpec) -> Option<String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    fn tasks<'a>(node: &'a Node, out: &mut HashMap<&'a str, &'a TaskSpec>) {
        if let NodeKind::Task(t) = node.kind() {
            out.entry(t.id.as_ref()).or_insert(t);
        }
        for c in node.children() {
            tasks(c, out);
        }
    }
    let mut by_id = HashMap::new();
    tasks(tree, &mut by_id);
    move |id| by_id.get(id).and_then(|t| state(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_test_vectors() {
        let mut h = Fnv64::new();
        h.bytes(b"");
        assert_eq!(h.0, 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv64::new();
        h.bytes(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
        let mut h = Fnv64::new();
        h.bytes(b"foobar");
        assert_eq!(h.0, 0x8594_4171_f739_67e8);
    }
}
