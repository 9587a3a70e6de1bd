//! Output types: what a task returns, and how it maps onto a SQLite table.
//!
//! `#[derive(Output)]` implements [`Output`] for a struct. The engine only sees the type-erased
//! [`OutputInfo`], which carries the table name, the column list, the JSON schema and a
//! validating deserialiser.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::stored_names;

stored_names! {
    /// The SQL storage class of an output column. Its stored name is recorded in the
    /// output-table registry.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum ColumnKind {
        /// Signed or unsigned integer, stored as `INTEGER`.
        Integer = "integer",
        /// `bool`, stored as `INTEGER` 0/1.
        Bool = "bool",
        /// `f32`/`f64`, stored as `REAL`.
        Real = "real",
        /// `String`, stored as `TEXT`.
        Text = "text",
        /// Collections, maps, nested structs, enums: stored as `TEXT` holding JSON.
        Json = "json",
    }
}

impl ColumnKind {
    /// The SQL type used in `CREATE TABLE`.
    pub fn sql_type(self) -> &'static str {
        match self {
            ColumnKind::Integer | ColumnKind::Bool => "INTEGER",
            ColumnKind::Real => "REAL",
            ColumnKind::Text | ColumnKind::Json => "TEXT",
        }
    }
}

/// How a field type is stored: its column kind and whether the column may hold `NULL`.
///
/// `#[derive(Output)]` reads a field's column from this trait, so the type checker decides it:
/// `type Id = i64` is an `INTEGER` like `i64`. It is implemented for integers up to 64 bits,
/// floats, `bool`, strings, `Option<T>` (nullable, `T`'s kind), the standard collections and
/// `serde_json::Value` (JSON), and smart pointers (their content's kind). A field of any other
/// type is stored as JSON once the field says so with `#[output(json)]`, or once its type
/// implements this trait:
///
/// ```
/// # use smithers_core::output::{ColumnKind, ColumnType};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Severity { Low, High }
///
/// impl ColumnType for Severity {
///     const KIND: ColumnKind = ColumnKind::Json;
/// }
/// assert_eq!(<Option<Severity> as ColumnType>::KIND, ColumnKind::Json);
/// assert!(<Option<Severity> as ColumnType>::NULLABLE);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no column type: the derive cannot tell how to store it",
    label = "no column type for `{Self}`",
    note = "add `#[output(json)]` to the field to store it as JSON, or implement `smithers::output::ColumnType` for `{Self}`"
)]
pub trait ColumnType {
    /// The storage class of the column.
    const KIND: ColumnKind;
    /// Whether the column may be `NULL` (the field is an `Option`).
    const NULLABLE: bool = false;
}

macro_rules! column_types {
    ($kind:ident: $($ty:ty),* $(,)?) => {
        $(impl ColumnType for $ty {
            const KIND: ColumnKind = ColumnKind::$kind;
        })*
    };
}

column_types!(Integer: i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);
column_types!(Real: f32, f64);
column_types!(Bool: bool);
column_types!(Text: String, str, char, std::path::PathBuf);
column_types!(Json: Value, serde_json::Map<String, Value>);

impl<T: ColumnType> ColumnType for Option<T> {
    const KIND: ColumnKind = T::KIND;
    const NULLABLE: bool = true;
}

impl<T: ColumnType + ?Sized> ColumnType for &T {
    const KIND: ColumnKind = T::KIND;
    const NULLABLE: bool = T::NULLABLE;
}

macro_rules! pointer_column_types {
    ($($ptr:ident)::+) => {
        impl<T: ColumnType + ?Sized> ColumnType for $($ptr)::+<T> {
            const KIND: ColumnKind = T::KIND;
            const NULLABLE: bool = T::NULLABLE;
        }
    };
}

pointer_column_types!(Box);
pointer_column_types!(std::sync::Arc);
pointer_column_types!(std::rc::Rc);

impl<T: ?Sized + ToOwned> ColumnType for std::borrow::Cow<'_, T>
where
    T: ColumnType,
{
    const KIND: ColumnKind = T::KIND;
    const NULLABLE: bool = T::NULLABLE;
}

macro_rules! json_column_types {
    ($($ty:ident)::+ <$($p:ident),*>) => {
        impl<$($p),*> ColumnType for $($ty)::+<$($p),*> {
            const KIND: ColumnKind = ColumnKind::Json;
        }
    };
}

json_column_types!(Vec<T>);
json_column_types!(std::collections::VecDeque<T>);
json_column_types!(std::collections::BTreeSet<T>);
json_column_types!(std::collections::BTreeMap<K, V>);
json_column_types!(std::collections::HashSet<T, S>);
json_column_types!(std::collections::HashMap<K, V, S>);

impl<T> ColumnType for [T] {
    const KIND: ColumnKind = ColumnKind::Json;
}

impl<T, const N: usize> ColumnType for [T; N] {
    const KIND: ColumnKind = ColumnKind::Json;
}

macro_rules! tuple_column_types {
    ($(($($t:ident),+)),*) => {
        $(impl<$($t),+> ColumnType for ($($t,)+) {
            const KIND: ColumnKind = ColumnKind::Json;
        })*
    };
}

tuple_column_types!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

/// One column of an output table (one field of the output struct).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Column {
    /// Column name: the field's serialized name.
    pub name: &'static str,
    /// Storage class.
    pub kind: ColumnKind,
    /// Whether the field is an `Option` (nullable column).
    pub nullable: bool,
    /// The Rust type as written, for error messages (`Vec<String>`).
    pub rust_type: &'static str,
}

/// A workflow output: a struct persisted as one row per `(run_id, node_id, iteration)`.
///
/// Implement it with `#[derive(Output)]`; hand implementations must keep [`Output::COLUMNS`]
/// in step with the serde representation.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a workflow output",
    label = "not a workflow output",
    note = "add `#[derive(Output, Serialize, Deserialize, JsonSchema)]` to `{Self}`"
)]
pub trait Output:
    Serialize + DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static
{
    /// Table name (snake_case of the type unless overridden with `#[output(table = "...")]`).
    const TABLE: &'static str;
    /// One column per field.
    const COLUMNS: &'static [Column];

    /// The JSON schema of the type, with doc comments as descriptions.
    fn output_schema() -> Value {
        schemars::schema_for!(Self).to_value()
    }

    /// The type-erased description used by the engine and the store.
    fn info() -> OutputInfo {
        OutputInfo {
            type_name: std::any::type_name::<Self>(),
            table: Self::TABLE,
            columns: Self::COLUMNS,
            schema: Self::output_schema,
            validate: validate_as::<Self>,
        }
    }
}

fn validate_as<T: Output>(value: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// Everything the engine needs to know about an output type, without generics.
#[derive(Clone, Copy)]
pub struct OutputInfo {
    /// `std::any::type_name` of the output type.
    pub type_name: &'static str,
    /// Table name.
    pub table: &'static str,
    /// Columns.
    pub columns: &'static [Column],
    /// The JSON schema.
    pub schema: fn() -> Value,
    /// Deserialises a JSON value into the type and serialises it back (normalised), or says why not.
    pub validate: fn(&Value) -> Result<Value, String>,
}

impl OutputInfo {
    /// Short type name (`Analysis` rather than `my_crate::Analysis`), for messages.
    pub fn short_name(&self) -> &'static str {
        short_type_name(self.type_name)
    }

    /// Validates `value` as this type and checks every field fits its column (integers in 64
    /// signed bits); returns the normalised value.
    pub fn check(&self, value: &Value) -> Result<Value, String> {
        let v = (self.validate)(value)?;
        for c in self.columns {
            match (c.kind, v.get(c.name)) {
                (_, None | Some(Value::Null)) if c.nullable => {}
                (ColumnKind::Integer, Some(n)) if n.as_i64().is_none() => {
                    return Err(format!(
                        "field `{}` = {n} does not fit a 64-bit signed integer column",
                        c.name
                    ));
                }
                (ColumnKind::Real, Some(n)) if !n.is_number() => {
                    return Err(format!("field `{}` = {n} is not a finite number", c.name));
                }
                _ => {}
            }
        }
        Ok(v)
    }

    /// Hash over table name, columns and JSON schema: changes when the shape of the type changes.
    pub fn signature(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.table.as_bytes());
        for c in self.columns {
            h.update(format!("|{}:{}:{}", c.name, c.kind.as_str(), c.nullable).as_bytes());
        }
        h.update((self.schema)().to_string().as_bytes());
        hex::encode(&h.finalize()[..12])
    }
}

impl std::fmt::Debug for OutputInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputInfo")
            .field("type", &self.type_name)
            .field("table", &self.table)
            .finish()
    }
}

/// `a::b::Foo<c::Bar>` → `Foo<Bar>`.
pub fn short_type_name(full: &'static str) -> &'static str {
    let head = full.split('<').next().unwrap_or(full);
    match head.rfind("::") {
        Some(i) if !full.contains('<') => &full[i + 2..],
        Some(i) => &full[i + 2..],
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_kinds_round_trip_under_their_registry_names() {
        crate::model::tests::check_stored_names(
            ColumnKind::ALL,
            &["integer", "bool", "real", "text", "json"],
            ColumnKind::as_str,
            ColumnKind::parse,
        );
    }
}
