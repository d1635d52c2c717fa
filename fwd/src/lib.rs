//! uvs-fwd: wire formats, checksums and forwarding methods. No I/O.
