//! A deserializer wrapper that takes structs only as JSON objects.
//!
//! serde's derived `Deserialize` for a struct with named fields also accepts
//! a sequence of its field values in order (serde-rs/serde#1587), and
//! serde_json offers one whenever the input has an array: a request body
//! `["k", "v"]` would be taken as `{"key": "k", "value": "v"}`, and a
//! client's mistake would be read as something it never meant.
//! [`Strict`] forwards every call to the wrapped deserializer, wrapping each
//! visitor, seed and access on the way down, and refuses a sequence where a
//! struct (or a struct variant) was asked for.
//!
//! Invariant: apart from that refusal it changes nothing — every other
//! input gives the same value or the same error as the wrapped deserializer.
//! Internally tagged and untagged enums and flattened fields are read by
//! serde from a buffered copy of their input, past this wrapper: inside
//! those, an array is still taken for a struct.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Unexpected,
    VariantAccess, Visitor,
};

/// Deserializes `T` from JSON, refusing arrays where `T` (or anything in
/// it) expects a struct.
pub fn from_slice<'de, T: serde::Deserialize<'de>>(body: &'de [u8]) -> serde_json::Result<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = T::deserialize(Strict(&mut de))?;
    de.end()?;
    Ok(value)
}

/// [`from_slice`], the error with the path of the field it is about
/// (`"."` for the body as a whole), as `serde_path_to_error` gives it.
pub fn from_slice_with_path<'de, T: serde::Deserialize<'de>>(
    body: &'de [u8],
) -> Result<T, (String, serde_json::Error)> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(Strict(&mut de))
        .map_err(|e| (e.path().to_string(), e.into_inner()))?;
    de.end().map_err(|e| (".".to_string(), e))?;
    Ok(value)
}

/// The wrapped deserializer (see the module doc).
pub struct Strict<D>(pub D);

/// A visitor passed on; `object_only` when a struct was asked for.
struct Wrap<V> {
    inner: V,
    object_only: bool,
}

impl<V> Wrap<V> {
    fn any(inner: V) -> Self {
        Wrap {
            inner,
            object_only: false,
        }
    }
}

struct Seed<S>(S);
struct Seq<A>(A);
struct Map<A>(A);
struct Enum<A>(A);
struct Variant<A>(A);

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
                self.0.$method(Wrap::any(visitor))
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Strict<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_unit_struct(name, Wrap::any(visitor))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_newtype_struct(name, Wrap::any(visitor))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_tuple(len, Wrap::any(visitor))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0
            .deserialize_tuple_struct(name, len, Wrap::any(visitor))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            object_only: true,
        };
        self.0.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_enum(name, variants, Wrap::any(visitor))
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Strict(d))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Strict(d))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        if self.object_only {
            return Err(de::Error::invalid_type(Unexpected::Seq, &"a JSON object"));
        }
        self.inner.visit_seq(Seq(seq))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(Map(map))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(Enum(data))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(Strict(d))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Seq<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Map<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed(seed))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Enum<A> {
    type Error = A::Error;
    type Variant = Variant<A::Variant>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), A::Error> {
        let (value, variant) = self.0.variant_seed(Seed(seed))?;
        Ok((value, Variant(variant)))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Variant<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Wrap::any(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = Wrap {
            inner: visitor,
            object_only: true,
        };
        self.0.struct_variant(fields, visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::from_slice;

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Op {
        Put { key: String },
        Delete(String),
        Pair(u32, u32),
        Stop,
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "kind")]
    enum Tagged {
        One { inner: Inner },
    }

    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        name: String,
        inner: Inner,
        #[serde(default)]
        maybe: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        ops: Vec<Op>,
        #[serde(default)]
        pairs: Vec<(u32, String)>,
        #[serde(default)]
        by_name: BTreeMap<String, Inner>,
        #[serde(default)]
        tagged: Option<Tagged>,
    }

    fn refused(body: &str) -> String {
        match from_slice::<Request>(body.as_bytes()) {
            Ok(r) => panic!("{body} was accepted as {r:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn objects_of_every_shape_still_parse() {
        let body = r#"{"name": "x", "inner": {"a": 1}, "maybe": {"a": 2}, "list": [{"a": 3}],
            "ops": [{"put": {"key": "k"}}, {"delete": "d"}, {"pair": [1, 2]}, "stop"],
            "pairs": [[4, "four"]], "by_name": {"b": {"a": 5}}, "tagged": {"kind": "One", "inner": {"a": 6}}}"#;
        let r: Request = from_slice(body.as_bytes()).unwrap();
        assert_eq!(r.maybe, Some(Inner { a: 2 }));
        assert_eq!(r.list, vec![Inner { a: 3 }]);
        assert_eq!(
            r.ops,
            vec![
                Op::Put { key: "k".into() },
                Op::Delete("d".into()),
                Op::Pair(1, 2),
                Op::Stop
            ]
        );
        assert_eq!(r.pairs, vec![(4, "four".into())]);
        assert_eq!(r.by_name["b"], Inner { a: 5 });
        assert_eq!(
            r.tagged,
            Some(Tagged::One {
                inner: Inner { a: 6 }
            })
        );
    }

    #[test]
    fn arrays_for_structs_are_refused_at_any_depth() {
        for body in [
            r#"["x", {"a": 1}]"#,
            r#"{"name": "x", "inner": [1]}"#,
            r#"{"name": "x", "inner": {"a": 1}, "maybe": [2]}"#,
            r#"{"name": "x", "inner": {"a": 1}, "list": [[3]]}"#,
            r#"{"name": "x", "inner": {"a": 1}, "ops": [{"put": ["k"]}]}"#,
            r#"{"name": "x", "inner": {"a": 1}, "by_name": {"b": [5]}}"#,
        ] {
            let e = refused(body);
            assert!(
                e.contains("invalid type: sequence, expected a JSON object"),
                "{body}: {e}"
            );
        }
    }

    #[test]
    fn other_errors_are_serde_json_s_own() {
        assert!(
            refused(r#"{"name": "x", "inner": {"a": 1}, "extra": 1}"#)
                .contains("unknown field `extra`")
        );
        assert!(refused(r#"{"name": "x"}"#).contains("missing field `inner`"));
        assert!(
            refused(r#"{"name": "x", "inner": {"a": 1}} trailing"#).contains("trailing characters")
        );
        assert!(
            refused(r#"{"name": 1, "inner": {"a": 1}}"#)
                .contains("invalid type: integer `1`, expected a string")
        );
    }
}
