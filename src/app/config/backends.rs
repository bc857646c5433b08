//! The one list of backends. Each backend's config (raw YAML block, validation, effective
//! section, the CLI flags it reads) lives in `adapters/<name>/config.rs` behind
//! [`BackendSection`]; this file lists them once in [`BACKENDS`] and holds the [`Backend`]
//! enum. The CLI's `--backend` values, the YAML `backend.<name>` keys, selection, unknown-key
//! reporting, ignored-flag warnings and the effective config all go through the table.

use std::any::Any;
use std::fmt;

use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::adapters::backend_config::{BackendSection, Context, Findings};
use crate::adapters::command::CommandConfig;
use crate::adapters::docker::DockerConfig;
use crate::adapters::host::DirectConfig;
use crate::adapters::kubernetes::KubernetesConfig;

/// The selected backend with its validated section.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// `docker` (also the default when nothing is selected).
    Docker(DockerConfig),
    /// `kubernetes`.
    Kubernetes(Box<KubernetesConfig>),
    /// `direct`.
    Direct(DirectConfig),
    /// `command`.
    Command(CommandConfig),
}

/// Every backend, in selection order: without `--backend`, the first block configured in the
/// file wins; with none, [`DEFAULT_BACKEND`].
pub(crate) const BACKENDS: [Entry; 4] = [
    Entry::of::<DirectConfig>(),
    Entry::of::<KubernetesConfig>(),
    Entry::of::<CommandConfig>(),
    Entry::of::<DockerConfig>(),
];

/// The backend used when neither the CLI nor the file selects one.
pub(crate) const DEFAULT_BACKEND: &str = DockerConfig::NAME;

impl From<DockerConfig> for Backend {
    fn from(config: DockerConfig) -> Self {
        Self::Docker(config)
    }
}

impl From<KubernetesConfig> for Backend {
    fn from(config: KubernetesConfig) -> Self {
        Self::Kubernetes(Box::new(config))
    }
}

impl From<DirectConfig> for Backend {
    fn from(config: DirectConfig) -> Self {
        Self::Direct(config)
    }
}

impl From<CommandConfig> for Backend {
    fn from(config: CommandConfig) -> Self {
        Self::Command(config)
    }
}

impl Backend {
    /// The backend's name: `docker`, `kubernetes`, `direct` or `command`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Docker(_) => DockerConfig::NAME,
            Self::Kubernetes(_) => KubernetesConfig::NAME,
            Self::Direct(_) => DirectConfig::NAME,
            Self::Command(_) => CommandConfig::NAME,
        }
    }

    /// The effective-config section (secrets redacted).
    pub(crate) fn effective(&self) -> serde_norway::Value {
        match self {
            Self::Docker(config) => config.effective(),
            Self::Kubernetes(config) => config.effective(),
            Self::Direct(config) => config.effective(),
            Self::Command(config) => config.effective(),
        }
    }
}

/// A backend's raw block as read from the file, its type erased (the entry that read it
/// knows it).
pub(crate) type RawBlock = Box<dyn Any>;

/// How a block appears under `backend:` in the file.
pub(crate) enum Presence {
    /// `backend.<name>:` with no value: selects nothing.
    Null,
    /// A mapping (possibly empty): selects this backend.
    Given(RawBlock),
}

/// One row of the table: a backend's [`BackendSection`] functions, type-erased.
pub(crate) struct Entry {
    /// `--backend` value and YAML key.
    pub name: &'static str,
    /// Backend-specific CLI flags this backend reads.
    pub cli_flags: &'static [&'static str],
    /// Reads `backend.<name>` from the file's text (so type errors keep their path and line).
    pub read: fn(&str) -> Result<Option<Presence>, serde_norway::Error>,
    /// The block's unknown keys, relative to the block.
    pub unknown_keys: fn(&RawBlock) -> Vec<String>,
    /// Where a retired key's setting now belongs.
    pub retired_key: fn(&str) -> Option<String>,
    /// Validates the block (the default block when `None`) into a [`Backend`].
    pub build: fn(Option<RawBlock>, &Context<'_>, &mut Findings) -> Backend,
}

impl Entry {
    const fn of<C: BackendSection>() -> Self
    where
        Backend: From<C>,
    {
        Self {
            name: C::NAME,
            cli_flags: C::CLI_FLAGS,
            read: read::<C>,
            unknown_keys: unknown_keys::<C>,
            retired_key: C::retired_key,
            build: build::<C>,
        }
    }
}

/// The table entry called `name`.
pub(crate) fn entry(name: &str) -> Option<&'static Entry> {
    BACKENDS.iter().find(|entry| entry.name == name)
}

/// The backend names, in table order (the `--backend` values).
pub(crate) fn names() -> impl Iterator<Item = &'static str> {
    BACKENDS.iter().map(|entry| entry.name)
}

fn read<C: BackendSection>(text: &str) -> Result<Option<Presence>, serde_norway::Error> {
    let seed = BlockSeed::<C::Raw> {
        path: ["backend", C::NAME],
        depth: 0,
        marker: std::marker::PhantomData,
    };
    let found = seed.deserialize(serde_norway::Deserializer::from_str(text))?;
    Ok(found.map(|block| match block {
        None => Presence::Null,
        Some(raw) => Presence::Given(Box::new(raw)),
    }))
}

fn unknown_keys<C: BackendSection>(raw: &RawBlock) -> Vec<String> {
    raw.downcast_ref::<C::Raw>()
        .map(C::unknown_keys)
        .unwrap_or_default()
}

fn build<C: BackendSection>(
    raw: Option<RawBlock>,
    context: &Context<'_>,
    findings: &mut Findings,
) -> Backend
where
    Backend: From<C>,
{
    let raw = raw
        .and_then(|raw| raw.downcast::<C::Raw>().ok())
        .map(|raw| *raw)
        .unwrap_or_default();
    Backend::from(C::parse(raw, context, findings))
}

/// Walks the mappings along `path` and deserializes the value found there as `Option<T>`:
/// `None` when a key is absent, `Some(None)` when the value is null. Everything else is skipped
/// unread, so errors come only from the block itself, with serde_norway's path and line.
struct BlockSeed<T> {
    path: [&'static str; 2],
    depth: usize,
    marker: std::marker::PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for BlockSeed<T> {
    type Value = Option<Option<T>>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        if self.depth == self.path.len() {
            return Option::<T>::deserialize(deserializer).map(Some);
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for BlockSeed<T> {
    type Value = Option<Option<T>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<serde_norway::Value>()? {
            if key.as_str() == Some(self.path[self.depth]) && found.is_none() {
                found = map.next_value_seed(BlockSeed::<T> {
                    path: self.path,
                    depth: self.depth + 1,
                    marker: std::marker::PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}
