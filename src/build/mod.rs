//! Image builds from a Containerfile (issue 19, in progress): the parser
//! the shell words of its arguments, path patterns, the build context
//! and the layer writer so far.

pub(crate) mod context;
pub(crate) mod glob;
pub(crate) mod layer;
pub(crate) mod parse;
pub(crate) mod words;
