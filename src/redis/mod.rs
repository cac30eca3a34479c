//! Redis as the gateway uses it: the connection and its durability check ([`connection`]),
//! every key and channel ([`keyspace`]), the Lua scripts ([`scripts`]), the cross-instance
//! cache invalidation ([`invalidation`]) and the in-process cache it drops entries of
//! ([`cache`]).

pub mod cache;
pub mod connection;
pub mod invalidation;
pub mod keyspace;
pub mod scripts;
