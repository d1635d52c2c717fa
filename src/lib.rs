//! uvs: the engine, control plane and lab.
