//! Image builds from a Containerfile (issue 19, in progress): the parser
//! the shell words of its arguments, and the layer writer so far.

pub(crate) mod layer;
pub(crate) mod parse;
pub(crate) mod words;
