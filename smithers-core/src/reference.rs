//! Typed node handles: `Ref<T>` names a task and the type of its output.

use std::marker::PhantomData;

use crate::output::Output;

/// A typed handle to a task: its id and the type of its output.
///
/// ```
/// # use smithers_core::Ref;
/// # #[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)] struct Review { approved: bool }
/// const REVIEW: Ref<Review> = Ref::new("review");
/// assert_eq!(REVIEW.id(), "review");
/// ```
pub struct Ref<T> {
    id: &'static str,
    _marker: PhantomData<fn() -> T>,
}

impl<T> Ref<T> {
    /// A handle to the task with this id.
    pub const fn new(id: &'static str) -> Self {
        Ref {
            id,
            _marker: PhantomData,
        }
    }

    /// The task id.
    pub const fn id(&self) -> &'static str {
        self.id
    }
}

impl<T> Clone for Ref<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Ref<T> {}

impl<T> std::fmt::Debug for Ref<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ref<{}>({:?})", std::any::type_name::<T>(), self.id)
    }
}

/// Anything that names a task whose output is `T`: a [`Ref<T>`], or a string id when the type is
/// given explicitly (`ctx.latest::<Review>("review")`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not name a task whose output is `{T}`",
    label = "expected a `Ref<{T}>` or a string id",
    note = "a `Ref<A>` can only name a task with `output=A`; check the task's `id` and `output`"
)]
pub trait NodeRef<T> {
    /// The task id.
    fn node_id(&self) -> &str;
}

impl<T: Output> NodeRef<T> for Ref<T> {
    fn node_id(&self) -> &str {
        self.id
    }
}
impl<T: Output> NodeRef<T> for &Ref<T> {
    fn node_id(&self) -> &str {
        self.id
    }
}
impl<T: Output> NodeRef<T> for &str {
    fn node_id(&self) -> &str {
        self
    }
}
impl<T: Output> NodeRef<T> for String {
    fn node_id(&self) -> &str {
        self
    }
}
impl<T: Output> NodeRef<T> for &String {
    fn node_id(&self) -> &str {
        self
    }
}

/// A handle to a `<Ralph>` loop: its id, shared by the tag that declares the loop and the
/// [`Ctx::iteration`](crate::Ctx::iteration) calls that read its counter, so the two cannot
/// drift apart.
///
/// ```
/// # use smithers_core::LoopRef;
/// const FIX_LOOP: LoopRef = LoopRef::new("fix");
/// assert_eq!(FIX_LOOP.id(), "fix");
/// assert_eq!(LoopRef::DEFAULT.id(), "ralph");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LoopRef {
    id: &'static str,
}

impl LoopRef {
    /// The loop of a `<Ralph>` written without `id` (its id is `ralph`).
    pub const DEFAULT: LoopRef = LoopRef::new("ralph");

    /// A handle to the loop with this id.
    pub const fn new(id: &'static str) -> Self {
        LoopRef { id }
    }

    /// The loop id.
    pub const fn id(&self) -> &'static str {
        self.id
    }
}

impl std::fmt::Debug for LoopRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoopRef({:?})", self.id)
    }
}

/// Anything that names a Ralph loop: a [`LoopRef`] (preferred), or its id as a string.
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not name a Ralph loop",
    label = "expected a `LoopRef` or a string id",
    note = "declare the loop's handle once (`const FIX_LOOP: LoopRef = LoopRef::new(\"fix\");`), \
            give it to `<Ralph id=FIX_LOOP>` and read it with `ctx.iteration(FIX_LOOP)`"
)]
pub trait LoopId {
    /// The loop id.
    fn loop_id(&self) -> &str;
}

impl LoopId for LoopRef {
    fn loop_id(&self) -> &str {
        self.id
    }
}
impl LoopId for &LoopRef {
    fn loop_id(&self) -> &str {
        self.id
    }
}
impl LoopId for &str {
    fn loop_id(&self) -> &str {
        self
    }
}
impl LoopId for String {
    fn loop_id(&self) -> &str {
        self
    }
}
impl LoopId for &String {
    fn loop_id(&self) -> &str {
        self
    }
}
