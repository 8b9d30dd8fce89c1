"""The vendored set of build inputs: everything a build of the image fetches,
in one directory, for a build with no network (scripts/vendor,
scripts/build-image --offline).

Modules, one job each:
  manifest  MANIFEST (SHA-256 of every file) and inputs.txt (which lock files it was made for)
  crates    the .crate files of Cargo.lock and patches/crates.lock, cargo's index entries for them,
            and a cargo home filled from them
  debian    the build's Debian packages (image/build-packages) with the signed archive
            lists that vouch for them
  wheels    the pinned model wheels (scripts/models.lock)
See docs/image.md, "Offline build".
"""


class VendorError(Exception):
    """A failure, named by the operation that failed: one line for the user."""
