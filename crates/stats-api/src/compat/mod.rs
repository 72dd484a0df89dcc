//! The request forms of the systems eventgate replaces, where they differ from the query language:
//! recognised unambiguously, translated into a query, answered in their own shape.

pub(crate) mod eventgate;
