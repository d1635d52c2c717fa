//! uvs-conntrack: the IPVS connection table. No I/O.
