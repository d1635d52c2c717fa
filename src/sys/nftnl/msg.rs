//! Building nf_tables transactions: tables, sets, chains, rules and their
//! expressions, and set elements, as netlink messages in one [`Batch`].
//!
//! A [`Batch`] only holds message bodies; [`super::NftSock::commit`] frames
//! them between `BATCH_BEGIN` and `BATCH_END` with sequence numbers. The
//! encodings follow the kernel's uapi (`linux/netfilter/nf_tables.h`):
//! integers in attributes are big endian unless the kernel keeps them in
//! host order in a register (`cmp` data against `fib`'s result type).

use super::abi;

/// Registers: `NFT_REG_1`..`NFT_REG_4` name 16-byte registers, and
/// `NFT_REG32_00`.. the 4-byte slots of the same storage. A value at byte
/// `off` of the register file (concatenations are laid out in 4-byte
/// steps) is named the way `nft` names it, so listings read the same.
pub const fn reg(off: u32) -> u32 {
    if off.is_multiple_of(16) {
        1 + off / 16
    } else {
        8 + off / 4
    }
}

/// `NFT_REG_1`: where single values are loaded.
pub const R1: u32 = 1;

/// Where a payload load starts (`enum nft_payload_bases`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The network header.
    Network = 1,
    /// The transport header.
    Transport = 2,
}

/// Meta keys uvs uses (`enum nft_meta_keys`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The frame's ethertype (2 bytes, network order).
    Protocol = 1,
    /// The layer-4 protocol (1 byte), after IPv6 extension headers.
    L4Proto = 16,
}

/// One rule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// `meta load KEY => dreg`.
    Meta {
        /// What to load.
        key: MetaKey,
        /// Destination register.
        dreg: u32,
    },
    /// `cmp eq|neq sreg DATA`: the rule stops when it does not hold.
    Cmp {
        /// Source register.
        sreg: u32,
        /// `true`: not equal.
        neq: bool,
        /// Bytes to compare with.
        data: Vec<u8>,
    },
    /// `payload load LEN @ BASE + OFFSET => dreg`.
    Payload {
        /// Header the offset counts from.
        base: Base,
        /// Offset in bytes.
        offset: u32,
        /// Bytes to load.
        len: u32,
        /// Destination register.
        dreg: u32,
    },
    /// `lookup sreg set NAME`: the rule stops when the key is not in it.
    Lookup {
        /// The set.
        set: SetRef,
        /// Register the key starts in.
        sreg: u32,
    },
    /// `fib daddr type => dreg` (the route type of the destination
    /// address: `RTN_LOCAL` = 2 for an address of this host).
    FibDaddrType {
        /// Destination register (4 bytes, host order).
        dreg: u32,
    },
    /// `counter`: packets and bytes that reached it.
    Counter,
    /// `immediate reg 0 drop`.
    Drop,
}

/// `RTN_LOCAL`, as `fib ... type` yields it (4 bytes, host order).
pub const RTN_LOCAL: u32 = 2;

/// A set named in a transaction: by name, and by the transaction-local id
/// when the same batch creates it (anonymous sets are named by the kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetRef {
    /// The set's name (`__set%d` for an anonymous one).
    pub name: String,
    /// `NFTA_SET_ID` given at creation in this batch.
    pub id: Option<u32>,
}

impl SetRef {
    /// A set that already exists.
    pub fn named(name: &str) -> SetRef {
        SetRef {
            name: name.to_string(),
            id: None,
        }
    }
}

/// Key data types as `nft` knows them (its `enum datatypes`), so that it
/// lists uvs's sets with their types; concatenations combine them 6 bits
/// per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `ipv4_addr`, 4 bytes.
    Ipv4Addr = 7,
    /// `ipv6_addr`, 16 bytes.
    Ipv6Addr = 8,
    /// `inet_proto`, 1 byte.
    InetProto = 12,
    /// `inet_service`, 2 bytes.
    InetService = 13,
    /// `icmp_type`, 1 byte.
    IcmpType = 14,
    /// `icmpv6_type`, 1 byte.
    Icmpv6Type = 29,
}

impl KeyType {
    fn len(self) -> u32 {
        match self {
            KeyType::Ipv4Addr => 4,
            KeyType::Ipv6Addr => 16,
            KeyType::InetService => 2,
            KeyType::InetProto | KeyType::IcmpType | KeyType::Icmpv6Type => 1,
        }
    }

    /// (type id, key length) of the concatenation of `fields`: each field
    /// occupies a multiple of 4 bytes unless it stands alone.
    pub fn concat(fields: &[KeyType]) -> (u32, u32) {
        if let [one] = fields {
            return (*one as u32, one.len());
        }
        let id = fields.iter().fold(0, |acc, f| (acc << 6) | *f as u32);
        let len = fields.iter().map(|f| (f.len() + 3) & !3).sum();
        (id, len)
    }
}

/// One message of a batch, without its netlink header.
#[derive(Debug, Clone)]
pub(super) struct Msg {
    /// `NFT_MSG_*`.
    pub kind: u16,
    /// Extra `NLM_F_*` flags (request and ack are always set).
    pub flags: u16,
    /// What it does, for error messages: "add table uvs", …
    pub what: String,
    /// The attributes.
    pub body: Vec<u8>,
}

/// One nf_tables transaction: applied whole or not at all.
#[derive(Debug, Clone)]
pub struct Batch {
    pub(super) family: u8,
    pub(super) msgs: Vec<Msg>,
    next_set_id: u32,
}

/// Netlink attributes appended to a byte buffer.
pub(super) struct Attrs<'a>(pub &'a mut Vec<u8>);

impl Attrs<'_> {
    pub fn bytes(&mut self, kind: u16, data: &[u8]) {
        let len = (4 + data.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(align4(self.0.len()), 0);
    }

    pub fn str(&mut self, kind: u16, s: &str) {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.bytes(kind, &v);
    }

    pub fn be32(&mut self, kind: u16, v: u32) {
        self.bytes(kind, &v.to_be_bytes());
    }

    /// A nested attribute whose contents `f` writes.
    pub fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Attrs<'_>)) {
        let at = self.0.len();
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        self.0
            .extend_from_slice(&(kind | abi::NLA_F_NESTED).to_ne_bytes());
        f(&mut Attrs(self.0));
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// `NFTA_DATA_VALUE` inside `kind`.
    pub fn data(&mut self, kind: u16, v: &[u8]) {
        self.nest(kind, |a| a.bytes(abi::NFTA_DATA_VALUE, v));
    }
}

pub(super) fn align4(n: usize) -> usize {
    (n + 3) & !3
}

impl Expr {
    fn name(&self) -> &'static str {
        match self {
            Expr::Meta { .. } => "meta",
            Expr::Cmp { .. } => "cmp",
            Expr::Payload { .. } => "payload",
            Expr::Lookup { .. } => "lookup",
            Expr::FibDaddrType { .. } => "fib",
            Expr::Counter => "counter",
            Expr::Drop => "immediate",
        }
    }

    fn encode_data(&self, a: &mut Attrs<'_>) {
        use abi::*;
        match self {
            Expr::Meta { key, dreg } => {
                a.be32(NFTA_META_KEY, *key as u32);
                a.be32(NFTA_META_DREG, *dreg);
            }
            Expr::Cmp { sreg, neq, data } => {
                a.be32(NFTA_CMP_SREG, *sreg);
                a.be32(NFTA_CMP_OP, u32::from(*neq));
                a.data(NFTA_CMP_DATA, data);
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                a.be32(NFTA_PAYLOAD_DREG, *dreg);
                a.be32(NFTA_PAYLOAD_BASE, *base as u32);
                a.be32(NFTA_PAYLOAD_OFFSET, *offset);
                a.be32(NFTA_PAYLOAD_LEN, *len);
            }
            Expr::Lookup { set, sreg } => {
                a.str(NFTA_LOOKUP_SET, &set.name);
                a.be32(NFTA_LOOKUP_SREG, *sreg);
                if let Some(id) = set.id {
                    a.be32(NFTA_LOOKUP_SET_ID, id);
                }
            }
            Expr::FibDaddrType { dreg } => {
                a.be32(NFTA_FIB_DREG, *dreg);
                a.be32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
                a.be32(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR);
            }
            Expr::Counter => {}
            Expr::Drop => {
                a.be32(NFTA_IMMEDIATE_DREG, 0);
                a.nest(NFTA_IMMEDIATE_DATA, |a| {
                    a.nest(NFTA_DATA_VERDICT, |a| a.be32(NFTA_VERDICT_CODE, NF_DROP));
                });
            }
        }
    }

    fn encode(&self, a: &mut Attrs<'_>) {
        a.nest(abi::NFTA_LIST_ELEM, |a| {
            a.str(abi::NFTA_EXPR_NAME, self.name());
            a.nest(abi::NFTA_EXPR_DATA, |a| self.encode_data(a));
        });
    }
}

/// An ingress base chain (`type filter hook ingress device DEV priority
/// PRIO; policy accept;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingress<'a> {
    /// Chain name.
    pub name: &'a str,
    /// Device it hooks.
    pub device: &'a str,
    /// Hook priority.
    pub priority: i32,
}

impl Batch {
    /// An empty transaction on tables of `family` (`NFPROTO_*`).
    pub fn new(family: u8) -> Batch {
        Batch {
            family,
            msgs: Vec::new(),
            next_set_id: 1,
        }
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// Messages in it.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    fn push(&mut self, kind: u16, flags: u16, what: String, f: impl FnOnce(&mut Attrs<'_>)) {
        let mut body = Vec::new();
        f(&mut Attrs(&mut body));
        self.msgs.push(Msg {
            kind,
            flags,
            what,
            body,
        });
    }

    /// Adds table `name`; `flags: None` is `nft add table` on a table
    /// that may exist (no error, nothing changed), `Some(f)` creates it
    /// with `NFTA_TABLE_FLAGS` = `f` (`NFT_TABLE_F_OWNER`, …).
    pub fn add_table(&mut self, name: &str, flags: Option<u32>) {
        self.push(
            abi::NFT_MSG_NEWTABLE,
            abi::NLM_F_CREATE,
            format!("add table {name}"),
            |a| {
                a.str(abi::NFTA_TABLE_NAME, name);
                if let Some(f) = flags {
                    a.be32(abi::NFTA_TABLE_FLAGS, f);
                }
            },
        );
    }

    /// Deletes table `name` with everything in it.
    pub fn del_table(&mut self, name: &str) {
        self.push(
            abi::NFT_MSG_DELTABLE,
            0,
            format!("delete table {name}"),
            |a| a.str(abi::NFTA_TABLE_NAME, name),
        );
    }

    /// Adds a named hash set keyed by the concatenation of `key`.
    pub fn add_set(&mut self, table: &str, name: &str, key: &[KeyType]) -> SetRef {
        self.new_set(table, name, key, 0, None)
    }

    fn new_set(
        &mut self,
        table: &str,
        name: &str,
        key: &[KeyType],
        flags: u32,
        size: Option<u32>,
    ) -> SetRef {
        let id = self.next_set_id;
        self.next_set_id += 1;
        let (ktype, klen) = KeyType::concat(key);
        self.push(
            abi::NFT_MSG_NEWSET,
            abi::NLM_F_CREATE,
            format!("add set {name}"),
            |a| {
                a.str(abi::NFTA_SET_TABLE, table);
                a.str(abi::NFTA_SET_NAME, name);
                a.be32(abi::NFTA_SET_FLAGS, flags);
                a.be32(abi::NFTA_SET_KEY_TYPE, ktype);
                a.be32(abi::NFTA_SET_KEY_LEN, klen);
                a.be32(abi::NFTA_SET_ID, id);
                if let Some(n) = size {
                    a.nest(abi::NFTA_SET_DESC, |a| a.be32(abi::NFTA_SET_DESC_SIZE, n));
                }
            },
        );
        SetRef {
            name: name.to_string(),
            id: Some(id),
        }
    }

    /// An anonymous constant set holding `keys` (what `nft` makes of
    /// `{ a, b, c }` in a rule); bound to the rule that looks it up, and
    /// deleted with it.
    pub fn anon_set(&mut self, table: &str, key: KeyType, keys: &[Vec<u8>]) -> SetRef {
        let set = self.new_set(
            table,
            "__set%d",
            &[key],
            abi::NFT_SET_ANONYMOUS | abi::NFT_SET_CONSTANT,
            Some(keys.len() as u32),
        );
        self.elems(table, &set, true, keys);
        set
    }

    /// Adds (`add`) or deletes `keys` in `set`, [`super::ELEMS_PER_MSG`]
    /// per message.
    pub fn elems(&mut self, table: &str, set: &SetRef, add: bool, keys: &[Vec<u8>]) {
        for chunk in keys.chunks(super::ELEMS_PER_MSG) {
            let (kind, flags, op) = if add {
                (abi::NFT_MSG_NEWSETELEM, abi::NLM_F_CREATE, "add")
            } else {
                (abi::NFT_MSG_DELSETELEM, 0, "delete")
            };
            self.push(
                kind,
                flags,
                format!("{op} elements of set {}", set.name),
                |a| {
                    a.str(abi::NFTA_SET_ELEM_LIST_TABLE, table);
                    a.str(abi::NFTA_SET_ELEM_LIST_SET, &set.name);
                    if let Some(id) = set.id {
                        a.be32(abi::NFTA_SET_ELEM_LIST_SET_ID, id);
                    }
                    a.nest(abi::NFTA_SET_ELEM_LIST_ELEMENTS, |a| {
                        for k in chunk {
                            a.nest(abi::NFTA_LIST_ELEM, |a| {
                                a.data(abi::NFTA_SET_ELEM_KEY, k);
                            });
                        }
                    });
                },
            );
        }
    }

    /// Adds an ingress base chain with policy accept.
    pub fn add_ingress_chain(&mut self, table: &str, c: &Ingress<'_>) {
        self.push(
            abi::NFT_MSG_NEWCHAIN,
            abi::NLM_F_CREATE,
            format!("add chain {} (ingress of {})", c.name, c.device),
            |a| {
                a.str(abi::NFTA_CHAIN_TABLE, table);
                a.str(abi::NFTA_CHAIN_NAME, c.name);
                a.str(abi::NFTA_CHAIN_TYPE, "filter");
                a.be32(abi::NFTA_CHAIN_POLICY, abi::NF_ACCEPT);
                a.nest(abi::NFTA_CHAIN_HOOK, |a| {
                    a.be32(abi::NFTA_HOOK_HOOKNUM, abi::NF_NETDEV_INGRESS);
                    a.be32(abi::NFTA_HOOK_PRIORITY, c.priority as u32);
                    a.str(abi::NFTA_HOOK_DEV, c.device);
                });
            },
        );
    }

    /// Appends a rule of `exprs` to `chain`.
    pub fn add_rule(&mut self, table: &str, chain: &str, exprs: &[Expr]) {
        self.push(
            abi::NFT_MSG_NEWRULE,
            abi::NLM_F_CREATE | abi::NLM_F_APPEND,
            format!("add rule to chain {chain}"),
            |a| {
                a.str(abi::NFTA_RULE_TABLE, table);
                a.str(abi::NFTA_RULE_CHAIN, chain);
                a.nest(abi::NFTA_RULE_EXPRESSIONS, |a| {
                    for e in exprs {
                        e.encode(a);
                    }
                });
            },
        );
    }
}
