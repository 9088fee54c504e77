use std::io::Write;

use anyhow::Context;
use clap::Parser;
use omega::{
    config::{Cli, Command, DatabaseArgs, KeysCommand, SecretsArgs},
    domain::{
        auth,
        pagination::{MAX_PAGE_SIZE, PageRequest},
    },
    envoy, proto, server,
    store::Store,
    telemetry,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(&cli.log)?;
    match cli.command {
        Command::Serve(args) => server::run(args, server::shutdown_signal()).await,
        Command::Migrate(database) => {
            let store = connect_migrated(&database).await?;
            store.close().await;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Keys { database, secrets, command } => keys(&database, &secrets, command).await,
        Command::Descriptor(args) => {
            if args.services {
                for name in proto::service_names() {
                    println!("{name}");
                }
            } else if let Some(path) = args.out {
                std::fs::write(&path, proto::DESCRIPTOR_SET).with_context(|| format!("writing {}", path.display()))?;
            } else {
                std::io::stdout().write_all(proto::DESCRIPTOR_SET)?;
            }
            Ok(())
        }
        Command::Openapi { out } => {
            let document = serde_json::to_string_pretty(&omega::openapi::document())?;
            match out {
                Some(path) => std::fs::write(&path, document).with_context(|| format!("writing {}", path.display()))?,
                None => println!("{document}"),
            }
            Ok(())
        }
        Command::EnvoyConfig(args) => {
            let params = envoy::EnvoyParams {
                listen_address: args.listen_address,
                listen_port: args.listen_port,
                admin_port: args.admin_port,
                upstreams: args.upstream,
                cable_upstreams: args.cable_upstream.into_iter().filter(|u| !u.trim().is_empty()).collect(),
                request_timeout_secs: args.request_timeout_secs,
                max_connections: args.max_connections,
                cors_origins: args.cors_allowed_origins,
            };
            let path = envoy::write_config(&args.template, &args.out_dir, &params)?;
            println!("{}", path.display());
            Ok(())
        }
    }
}

/// Key commands work on a fresh database too: the schema is brought up to date first.
async fn connect_migrated(database: &DatabaseArgs) -> anyhow::Result<Store> {
    let store = Store::connect_with(&database.database_url, database.database_max_connections)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

async fn keys(database: &DatabaseArgs, secrets: &SecretsArgs, command: KeysCommand) -> anyhow::Result<()> {
    // Read first: a missing or bad key fails before the database is touched.
    let secret_keys = match command {
        KeysCommand::RotateSecrets => Some(secrets.keys(&database.database_url).context("the secrets key")?),
        _ => None,
    };
    let store = connect_migrated(database).await?;
    let outcome = match command {
        KeysCommand::Create { label, business_id } => {
            auth::create_key(&store, &label, business_id).await.map(|issued| {
                let scope = issued.record.business_id.map_or("platform".to_owned(), |id| format!("business {id}"));
                eprintln!(
                    "created api key {} ({scope}, prefix {}); it is shown once:",
                    issued.record.id, issued.record.key_prefix
                );
                println!("{}", issued.plaintext);
            })
        }
        KeysCommand::List { business_id } => {
            auth::list_keys(&store, business_id, PageRequest { size: MAX_PAGE_SIZE, after: None }).await.map(|page| {
                println!(
                    "{:>6}  {:<12}  {:<16}  {:<25}  {:<25}  {:<25}  label",
                    "id", "prefix", "scope", "created", "last used", "revoked"
                );
                for key in page.items {
                    let scope = key.business_id.map_or("platform".to_owned(), |id| format!("business {id}"));
                    let when = |t: Option<chrono::DateTime<chrono::Utc>>| {
                        t.map_or("-".to_owned(), |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    };
                    println!(
                        "{:>6}  {:<12}  {:<16}  {:<25}  {:<25}  {:<25}  {}",
                        key.id,
                        key.key_prefix,
                        scope,
                        key.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        when(key.last_used_at),
                        when(key.revoked_at),
                        key.label
                    );
                }
            })
        }
        KeysCommand::Revoke { key_id } => {
            auth::revoke_key(&store, key_id).await.map(|()| eprintln!("api key {key_id} revoked"))
        }
        KeysCommand::RotateSecrets => {
            let keys = secret_keys.expect("read above");
            let resealed = async {
                let (resealed, total) =
                    omega::store::provider_credentials::reseal_credentials(store.writer(), &keys).await?;
                eprintln!(
                    "{resealed} of {total} stored provider credentials sealed again with key {}",
                    keys.current_id()
                );
                let (resealed, total) = omega::store::webhook_endpoints::reseal_secrets(store.writer(), &keys).await?;
                eprintln!("{resealed} of {total} webhook endpoint secrets sealed again with key {}", keys.current_id());
                Ok::<(), omega::store::StoreError>(())
            };
            resealed.await.map_err(Into::into)
        }
    };
    store.close().await;
    outcome.map_err(anyhow::Error::new)
}
