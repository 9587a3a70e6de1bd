//! Frames as data: the rendered tree as a [`FrameNode`] structure (tag, id, label, agent, whether
//! it is mounted, props, children), persisted as JSON. Every text view (`graph`, `frames`, the
//! frame's text column) is rendered from it, and readers such as the live view walk it instead of
//! parsing text. Frames recorded before the structure existed are read back with
//! [`FrameNode::from_legacy_text`]. A leaf: the store and the tree both depend on it (the tree
//! builds frames, `Node::frame`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// One node of a frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameNode {
    /// The tag as written in `workflow!` (`Task`, `Ralph`, ...), `then`/`else` for the arms of a
    /// `Branch`, `Fragment` for spliced nodes (transparent in every view).
    pub tag: String,
    /// The id of a task or loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The name of a workflow, phase or step; the `label` of a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The agent of an agent task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Whether the render mounted it: false inside the arm of a `Branch` that was not chosen.
    pub mounted: bool,
    /// The other props as shown (`output=Patch`, `retries=2`, `skip_if`...), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub props: Vec<String>,
    /// Its children.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<FrameNode>,
}

/// A node of a frame with its depth in the text view (see [`FrameNode::lines`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLine<'a> {
    /// Indentation level.
    pub depth: usize,
    /// The node.
    pub node: &'a FrameNode,
}

impl FrameNode {
    pub(crate) fn new(tag: &str, mounted: bool) -> Self {
        FrameNode {
            tag: tag.to_owned(),
            id: None,
            label: None,
            agent: None,
            mounted,
            props: Vec::new(),
            children: Vec::new(),
        }
    }

    fn is_arm(&self) -> bool {
        matches!(self.tag.as_str(), "then" | "else")
    }

    /// What a reader shows for it: the id of a task or loop, else the name.
    pub fn display_label(&self) -> Option<&str> {
        self.id.as_deref().or(self.label.as_deref())
    }

    /// The tree as indented text, one node per line (what `graph` and `frames` print).
    pub fn to_text(&self) -> String {
        self.to_text_with(&|_| None)
    }

    /// Like [`FrameNode::to_text`], with a state annotation per task (`[finished]`), looked up
    /// by task id.
    ///
    /// A task in an unmounted branch arm is annotated only when no mounted task shares its id:
    /// the state recorded under a shared id belongs to the mounted one.
    pub fn to_text_with(&self, state: &dyn Fn(&str) -> Option<String>) -> String {
        let mut mounted = std::collections::HashSet::new();
        self.mounted_task_ids(&mut mounted);
        let annotate = |node: &FrameNode| -> Option<String> {
            let id = node.id.as_deref()?;
            if !node.mounted && mounted.contains(id) {
                return None;
            }
            state(id)
        };
        let mut s = String::new();
        self.write_text(&mut s, 0, &annotate);
        s
    }

    fn mounted_task_ids<'a>(&'a self, out: &mut std::collections::HashSet<&'a str>) {
        if !self.mounted {
            return;
        }
        if self.tag == "Task" {
            if let Some(id) = &self.id {
                out.insert(id);
            }
        }
        for c in &self.children {
            c.mounted_task_ids(out);
        }
    }

    fn write_text(
        &self,
        s: &mut String,
        depth: usize,
        state: &dyn Fn(&FrameNode) -> Option<String>,
    ) {
        let indent = depth * 2;
        if self.tag == "Fragment" {
            for c in &self.children {
                c.write_text(s, depth, state);
            }
            return;
        }
        if self.is_arm() {
            let mark = if self.mounted { "" } else { " unmounted" };
            let _ = writeln!(s, "{:indent$}<{}{mark}>", "", self.tag);
            for c in &self.children {
                c.write_text(s, depth + 1, state);
            }
            let _ = writeln!(s, "{:indent$}</{}>", "", self.tag);
            return;
        }
        let _ = write!(s, "{:indent$}<{}", "", self.tag);
        if let Some(id) = &self.id {
            let _ = write!(s, " id={id:?}");
        } else if let Some(name) = &self.label {
            let _ = write!(s, " name={name:?}");
        }
        if self.tag == "Task" {
            // A task shows its id first, then its props; its `label` is not part of the view.
            for p in &self.props {
                let _ = write!(s, " {p}");
            }
            if let Some(st) = state(self) {
                let _ = write!(s, " [{st}]");
            }
        } else {
            for p in &self.props {
                let _ = write!(s, " {p}");
            }
        }
        if self.children.is_empty() {
            s.push_str(" />\n");
            return;
        }
        s.push_str(">\n");
        for c in &self.children {
            c.write_text(s, depth + 1, state);
        }
        let _ = writeln!(s, "{:indent$}</{}>", "", self.tag);
    }

    /// The nodes a reader shows, in order, each at its depth in the text view: fragments are
    /// transparent and what the render did not mount is left out.
    pub fn lines(&self) -> Vec<FrameLine<'_>> {
        let mut out = Vec::new();
        self.collect_lines(0, &mut out);
        out
    }

    fn collect_lines<'a>(&'a self, depth: usize, out: &mut Vec<FrameLine<'a>>) {
        if !self.mounted {
            return;
        }
        if self.tag == "Fragment" {
            for c in &self.children {
                c.collect_lines(depth, out);
            }
            return;
        }
        out.push(FrameLine { depth, node: self });
        for c in &self.children {
            c.collect_lines(depth + 1, out);
        }
    }

    /// Reads the indented text of a frame recorded before frames were stored as data (see
    /// [`FrameNode::to_text`]): tags, ids, names and agents, and which `Branch` arm is mounted.
    /// Props are not recovered; the stored text stays the frame's text view.
    pub fn from_legacy_text(text: &str) -> Self {
        let mut root = FrameNode::new("Fragment", true);
        // The open nodes, as (depth, path of child indexes from the root).
        let mut open: Vec<(usize, Vec<usize>)> = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim_start();
            let depth = (line.len() - trimmed.len()) / 2;
            let Some(rest) = trimmed.strip_prefix('<') else {
                continue;
            };
            if rest.starts_with('/') {
                continue;
            }
            while open.last().is_some_and(|(d, _)| *d >= depth) {
                open.pop();
            }
            let tag: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let parent_path = open.last().map(|(_, p)| p.clone()).unwrap_or_default();
            let parent = node_at(&mut root, &parent_path);
            let mut n = FrameNode::new(&tag, parent.mounted);
            if matches!(tag.as_str(), "then" | "else") {
                n.mounted = parent.mounted && !rest.contains(" unmounted");
            } else {
                n.id = quoted_attr(rest, " id=\"");
                n.label = quoted_attr(rest, " name=\"");
                n.agent = rest.split_once(" agent=").map(|(_, a)| {
                    a.chars()
                        .take_while(|c| !c.is_whitespace() && *c != '/' && *c != '>')
                        .collect()
                });
            }
            let self_closing = trimmed.trim_end().ends_with("/>");
            parent.children.push(n);
            let index = parent.children.len() - 1;
            if !self_closing {
                let mut path = parent_path;
                path.push(index);
                open.push((depth, path));
            }
        }
        if root.children.len() == 1 {
            root.children.pop().unwrap_or(root)
        } else {
            root
        }
    }
}

fn node_at<'a>(root: &'a mut FrameNode, path: &[usize]) -> &'a mut FrameNode {
    path.iter().fold(root, |n, &i| &mut n.children[i])
}

fn quoted_attr(s: &str, key: &str) -> Option<String> {
    let start = s.find(key)? + key.len();
    let mut out = String::new();
    let mut chars = s[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_text_reads_back_tags_labels_agents_and_the_mounted_arm() {
        let text = r#"<Workflow name="bugfix">
  <Task id="analyze" output=Analysis agent=claude retries=2 />
  <Branch if=false>
    <then unmounted>
      <Task id="big" output=N run />
    </then>
    <else>
      <Task id="small" output=N value />
    </else>
  </Branch>
  <Ralph id="ralph" until=false max_iterations=3 on_max_reached=Fail>
    <Task id="fix" output=Patch agent=codex />
  </Ralph>
</Workflow>
"#;
        let f = FrameNode::from_legacy_text(text);
        let got: Vec<_> = f
            .lines()
            .iter()
            .map(|l| {
                (
                    l.depth,
                    l.node.tag.as_str(),
                    l.node.display_label(),
                    l.node.agent.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, "Workflow", Some("bugfix"), None),
                (1, "Task", Some("analyze"), Some("claude")),
                (1, "Branch", None, None),
                (2, "else", None, None),
                (3, "Task", Some("small"), None),
                (1, "Ralph", Some("ralph"), None),
                (2, "Task", Some("fix"), Some("codex")),
            ]
        );
        assert_eq!(
            quoted_attr(r#" id="a\"b" x"#, " id=\""),
            Some("a\"b".into())
        );
    }
}
