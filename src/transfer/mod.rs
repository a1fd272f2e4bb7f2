//! Exports for air-gapped sites, and their import: repository versions
//! written as an OCI image layout in a tar (so skopeo reads an export
//! without wharf), split into chunks for media with a size limit, with a
//! table of contents an import checks before it stores anything.
//!
//! An export's directory:
//!
//! ```text
//! <path>/wharf-export-<id>/
//!   toc.json              every file in the archive (size, sha256), the
//!                         archive's chunks (size, sha256), one sha256 over it
//!   export.tar            the archive (export.tar.000, .001, ... in chunks):
//!     oci-layout
//!     index.json          every tag as org.opencontainers.image.ref.name
//!                         = "<repository>:<tag>"
//!     wharf-export.json   repositories, kinds, versions, tags, signatures
//!     blobs/<alg>/<hex>   each manifest and blob once, however many
//!                         repositories hold it
//! ```
//!
//! Work in progress (issue 18): the archive's chunks and the table of
//! contents; the export and import tasks come next.

pub(crate) mod chunks;
pub(crate) mod export;
pub(crate) mod toc;
