"""The image's software bill of materials and its licence check.

Modules, one job each:
  spdx       parse SPDX licence expressions and test them against an allow-list
  crates     the Rust crates linked into each shipped binary (cargo tree/metadata, Cargo.lock)
  policy     image/licences.allow and image/licences.crates (the licence policy, kept as data)
  debian     Debian packages as components, found from the files a build used (dpkg -S)
  parts      the SBOM documents: the image's (crates, Rust std, C runtime, kernel,
             systemd-boot, health model) and a stick's (model bundles)
  cyclonedx  a deterministic CycloneDX 1.5 JSON document
Used by scripts/sbom (called by scripts/build-image and scripts/demo).
"""


class SbomError(Exception):
    """A failure, named by the operation that failed: one line for the user."""
