//! Image builds from a Containerfile (issue 19, in progress): the parser
//! and the shell words of its arguments so far.

pub(crate) mod parse;
pub(crate) mod words;
