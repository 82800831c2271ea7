// A release build on Windows opens its window without a console.
#![cfg_attr(all(windows, not(debug_assertions)), windows_subsystem = "windows")]

//! `qchat`: the desktop client. Two panels as in the original program (files on the
//! left, chat on the right) over the same client core as `qchat-cli`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use qchat_client::args::ConnectArgs;
use qchat_gui::shell::{Settings, Shell};
use qchat_gui::style::ThemeChoice;
use qchat_gui::text::Lang;

#[derive(Parser)]
#[command(name = "qchat", version, about = "qchat, the desktop client")]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Where received files go (default: your download folder's `qchat`).
    #[arg(long)]
    download_dir: Option<PathBuf>,
    /// Light or dark colours; by default the system's, followed as it changes.
    #[arg(long, value_enum, default_value_t)]
    theme: ThemeChoice,
    /// The window's language (default: the system's; switchable in the window).
    #[arg(long, value_enum)]
    lang: Option<Lang>,
}

fn main() -> Result<()> {
    qchat_shared::logging::init("warn", qchat_shared::logging::LogFormat::Text);
    qchat_shared::allocator::tune();
    // Read while the process has one thread: the only moment the local offset is safe to ask.
    qchat_gui::format::init_local_offset();
    let cli = Cli::parse();
    let settings = Settings {
        server: cli.connect.server.clone(),
        data_dir: cli.connect.data_dir.clone(),
        download_dir: cli.download_dir,
        remember_in: qchat_gui::last::record_file(),
        lang: cli.lang.unwrap_or_else(Lang::of_system),
        size_record: qchat_gui::geometry::record_file(),
    };
    let size =
        settings.size_record.as_deref().and_then(qchat_gui::geometry::recall).unwrap_or(qchat_gui::geometry::DEFAULT);
    // Without --identity: the identity opened last (if it still loads), or else the join
    // screen (with the identities joined before, to open).
    let record = settings.remember_in.clone();
    let options = match &cli.connect.identity {
        Some(path) => Some(settings.options(path).map_err(anyhow::Error::msg)?),
        None => record.as_deref().and_then(qchat_gui::last::recall).and_then(|path| settings.options(&path).ok()),
    };
    if let (Some(record), Some(path)) = (&record, options.as_ref().and_then(|o| o.identity_path.as_ref())) {
        qchat_gui::last::remember(record, path);
    }
    let identities = qchat_gui::join::identities_dir();
    let boot = move || match &options {
        Some(options) => Shell::chat(options.clone(), &settings),
        None => Shell::join(identities.clone(), settings.clone()),
    };
    let theme = cli.theme;
    let window = iced::application(boot, Shell::update, Shell::view).theme(move |_: &Shell| theme.theme());
    let window = qchat_gui::fonts::FALLBACKS.iter().fold(window, |window, fallback| window.font(fallback.bytes));
    window.title(Shell::title).subscription(Shell::subscription).window_size(size).run()?;
    Ok(())
}
