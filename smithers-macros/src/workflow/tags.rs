//! The built-in tags and their props: the one table `validate` and `expand` both read.

/// A built-in tag of `workflow!`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tag {
    Workflow,
    Task,
    Sequence,
    Parallel,
    Ralph,
    Branch,
    Phase,
    Step,
}

/// What a tag name means.
pub(crate) enum TagKind {
    Builtin(Tag),
    /// A capitalised name (or a path): a `#[component]` function.
    Component,
    /// Anything else: an error.
    Unknown,
}

impl Tag {
    pub(crate) const ALL: [Tag; 8] = [
        Tag::Workflow,
        Tag::Task,
        Tag::Sequence,
        Tag::Parallel,
        Tag::Ralph,
        Tag::Branch,
        Tag::Phase,
        Tag::Step,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Tag::Workflow => "Workflow",
            Tag::Task => "Task",
            Tag::Sequence => "Sequence",
            Tag::Parallel => "Parallel",
            Tag::Ralph => "Ralph",
            Tag::Branch => "Branch",
            Tag::Phase => "Phase",
            Tag::Step => "Step",
        }
    }

    /// Classifies a tag name as written (`Task`, `task`, `my::Component`).
    pub(crate) fn classify(name: &str) -> TagKind {
        if let Some(t) = Tag::ALL.into_iter().find(|t| t.name() == name) {
            return TagKind::Builtin(t);
        }
        let last = name.rsplit("::").next().unwrap_or(name);
        if name.contains("::") || last.starts_with(|c: char| c.is_ascii_uppercase()) {
            TagKind::Component
        } else {
            TagKind::Unknown
        }
    }

    /// The props the tag accepts, as written in `workflow!`.
    pub(crate) fn props(self) -> &'static [&'static str] {
        match self {
            Tag::Workflow => &[
                "name",
                "cache",
                "max_concurrency",
                "retry_policy",
                "max_cost_usd",
                "max_tokens",
                "on_budget",
            ],
            Tag::Task => &[
                "id",
                "output",
                "agent",
                "run",
                "value",
                "prompt",
                "retries",
                "timeout",
                "retry_policy",
                "max_cost_usd",
                "max_tokens",
                "skip_if",
                "continue_on_fail",
                "needs_approval",
                "label",
                "meta",
            ],
            Tag::Sequence => &["skip_if", "label"],
            Tag::Parallel => &["skip_if", "label", "max_concurrency"],
            Tag::Ralph => &["id", "until", "max_iterations", "on_max_reached", "skip_if"],
            Tag::Branch => &["if", "then", "else"],
            Tag::Phase | Tag::Step => &["name", "skip_if", "on_start", "on_complete"],
        }
    }

    /// Props without which the tag is an error (Task's `output` rule lives in `validate`).
    pub(crate) fn required(self) -> &'static [&'static str] {
        match self {
            Tag::Task => &["id"],
            Tag::Phase | Tag::Step => &["name"],
            _ => &[],
        }
    }

    /// The builder method a prop becomes (`if` → `cond`, `else` → `otherwise`); `None` for props
    /// that are not a method call (`output` is the builder's type parameter).
    pub(crate) fn method(self, prop: &str) -> Option<&'static str> {
        let p = self.props().iter().copied().find(|p| *p == prop)?;
        Some(match p {
            "if" => "cond",
            "else" => "otherwise",
            "output" => return None,
            other => other,
        })
    }

    /// Whether children are prompt parts (Task) rather than nodes.
    pub(crate) fn takes_prompt(self) -> bool {
        self == Tag::Task
    }
}

/// A prop whose value is a variant of a smithers enum: the enum and its variants.
pub(crate) fn enum_prop(name: &str) -> Option<(&'static str, &'static [&'static str])> {
    match name {
        "on_max_reached" => Some(("OnMaxReached", &["ReturnLast", "Fail"])),
        "on_budget" => Some(("OnBudget", &["Fail", "Park"])),
        _ => None,
    }
}
