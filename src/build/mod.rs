//! Image builds from a Containerfile (issue 19, in progress): the parser
//! the shell words of its arguments, path patterns, the build context
//! the layer writer and the image's config and manifest so far.

pub(crate) mod bases;
pub(crate) mod context;
pub(crate) mod copy;
pub(crate) mod exec;
pub(crate) mod glob;
pub(crate) mod image;
pub(crate) mod layer;
pub(crate) mod parse;
pub(crate) mod tree;
pub(crate) mod words;
