//! Where attachment bytes live: a local directory by default, or an S3-compatible bucket when
//! several replicas serve one deployment (each must read what any other stored). Both go through
//! the `object_store` crate, so the rest of Omega sees one interface. Keys are Omega's own
//! (random, never a client's file name); the database says which key belongs to which message.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use object_store::{
    ObjectStore, ObjectStoreExt, aws::AmazonS3Builder, local::LocalFileSystem, memory::InMemory, path::Path as Key,
    prefix::PrefixStore,
};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("no stored file {0}")]
    NotFound(String),
    #[error("attachment store: {0}")]
    Store(#[from] object_store::Error),
}

#[derive(Clone, Debug)]
pub struct FileStore {
    inner: Arc<dyn ObjectStore>,
}

impl FileStore {
    /// Files kept in memory (tests and tools that never serve uploads).
    pub fn in_memory() -> Self {
        Self { inner: Arc::new(InMemory::new()) }
    }

    /// Files under `dir` (created if missing).
    pub fn local(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the attachment directory {}", dir.display()))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .with_context(|| format!("opening the attachment directory {}", dir.display()))?;
        Ok(Self { inner: Arc::new(store) })
    }

    /// Files in the bucket of `url` (`s3://bucket/optional/prefix`); endpoint, region and
    /// credentials come from the usual `AWS_*` variables (`AWS_ENDPOINT` for a non-AWS service,
    /// `AWS_ALLOW_HTTP=true` for one without TLS).
    pub fn s3(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3a://"));
        let Some(rest) = rest.filter(|r| !r.is_empty()) else {
            anyhow::bail!("OMEGA_ATTACHMENTS_URL must be s3://BUCKET[/PREFIX], not {url:?}");
        };
        // object_store's S3 client is a reqwest client: it needs the process's rustls provider.
        crate::providers::install_crypto_provider();
        let prefix = rest.split_once('/').map_or("", |(_, prefix)| prefix).trim_matches('/');
        let bucket = AmazonS3Builder::from_env()
            .with_url(url)
            .build()
            .with_context(|| format!("configuring the attachment bucket {url:?}"))?;
        let inner: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(bucket) } else { Arc::new(PrefixStore::new(bucket, prefix)) };
        Ok(Self { inner })
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), FileError> {
        self.inner.put(&Key::from(key), data.into()).await?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, FileError> {
        match self.inner.get(&Key::from(key)).await {
            Ok(found) => Ok(found.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(FileError::NotFound(key.to_owned())),
            Err(other) => Err(other.into()),
        }
    }

    /// Best effort: a file whose message was never stored (the write failed after the upload).
    pub async fn remove(&self, key: &str) {
        if let Err(err) = self.inner.delete(&Key::from(key)).await {
            tracing::warn!(key, error = %err, "could not remove an unused attachment file");
        }
    }
}
