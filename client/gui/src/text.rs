//! Every string the window shows, in English and Simplified Chinese: one [`Strings`] per
//! language, picked from the system's language and switchable in the window. Another
//! language is one more `Strings`. What the relay and the core say (reasons, names) is
//! shown as it comes; a change of a room's members is told in the window's language.

use qchat_client::rooms::Change;

/// The window's language.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Lang {
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// The language of a locale name such as `zh_CN.UTF-8`, `zh-Hans-CN` or `en-US`
    /// (English unless it is Chinese).
    pub fn of_locale(locale: &str) -> Lang {
        if locale.to_ascii_lowercase().starts_with("zh") {
            Lang::Zh
        } else {
            Lang::En
        }
    }

    /// The system's language (`LC_ALL`, `LC_MESSAGES`, `LANG` on Unix; the user's
    /// setting on Windows and macOS).
    pub fn of_system() -> Lang {
        sys_locale::get_locale().map(|l| Lang::of_locale(&l)).unwrap_or_default()
    }

    /// The other one, for the switch in the status line.
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }

    pub fn strings(self) -> &'static Strings {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

/// The window's words in one language.
pub struct Strings {
    /// The switch to this language, written in it.
    pub name: &'static str,
    pub rooms: &'static str,
    pub new_room: &'static str,
    pub room_name: &'static str,
    pub room_members: &'static str,
    pub create: &'static str,
    pub chat: &'static str,
    pub starts_when_written: &'static str,
    pub safety_number: &'static str,
    pub safety_number_with: fn(&str, &str) -> String,
    pub leave: &'static str,
    pub add_member: &'static str,
    pub add: &'static str,
    pub remove: &'static str,
    pub write_here: &'static str,
    pub file_path: &'static str,
    pub select_files: &'static str,
    pub send_file: &'static str,
    pub new_divider: &'static str,
    /// A change of the room's members (or its encryption group), made by the first.
    pub change: fn(&str, &Change) -> String,
    pub new_messages: fn(usize) -> String,
    pub show_earlier: fn(usize) -> String,
    /// Below the log when it stops short of the newest line.
    pub show_later: fn(usize) -> String,
    pub search_here: &'static str,
    pub found: fn(usize) -> String,
    pub received_by: fn(&str) -> String,
    pub files: &'static str,
    pub receive_all: fn(usize) -> String,
    pub open_downloads: &'static str,
    pub devices: &'static str,
    pub devices_of: fn(&str) -> String,
    pub close: &'static str,
    pub link_device: &'static str,
    pub invite_for_device: &'static str,
    pub copy: &'static str,
    pub asking_relay: &'static str,
    pub identity_file: &'static str,
    pub joined: fn(&str) -> String,
    pub last_seen: fn(&str) -> String,
    pub never_connected: &'static str,
    pub this_device: &'static str,
    pub revoke: &'static str,
    pub waiting_to_start: &'static str,
    pub uploading: &'static str,
    pub on_relay: &'static str,
    pub received: &'static str,
    pub arriving: fn(&str) -> String,
    pub offered: &'static str,
    pub downloading_as_it_arrives: &'static str,
    pub downloading: &'static str,
    pub saved: fn(&str) -> String,
    pub failed: fn(&str) -> String,
    pub expired: &'static str,
    pub done_of: fn(&str, &str) -> String,
    pub left: fn(&str) -> String,
    pub cancel: &'static str,
    pub receive: &'static str,
    pub open: &'static str,
    pub show_in_folder: &'static str,
    pub connecting: &'static str,
    pub connected_as: fn(&str) -> String,
    pub reconnecting: fn(&str) -> String,
    pub refused: fn(&str) -> String,
    pub closed: &'static str,
    pub online: fn(&str) -> String,
    pub offline: fn(&str) -> String,
    pub not_connected: &'static str,
    pub copied: &'static str,
    /// A folder dropped with too many files: the folder, how many (at least), the limit.
    pub too_many_files: fn(&str, usize, usize) -> String,
    pub message_kept: &'static str,
    pub welcome: &'static str,
    pub paste_invite: &'static str,
    pub device_called: &'static str,
    pub device_name: &'static str,
    pub join: &'static str,
    pub joining: &'static str,
    pub key_stays: &'static str,
    pub open_saved: &'static str,
    pub identity_path: &'static str,
    pub open_file: &'static str,
    pub join_title: &'static str,
    /// A calendar day: weekday, day, month (1–12), year.
    pub day: fn(time::Weekday, u8, u8, i32) -> String,
}

fn plural(n: usize, one: &str, several: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { several })
}

pub static EN: Strings = Strings {
    name: "English",
    rooms: "Rooms",
    new_room: "New room",
    room_name: "name",
    room_members: "members: bob, carol",
    create: "Create",
    chat: "Chat",
    starts_when_written: "(starts when one of you writes)",
    safety_number: "Safety number",
    safety_number_with: |user, number| {
        format!("Safety number with {user} (the same on their screen if no one stands between you): {number}")
    },
    leave: "Leave",
    add_member: "add a member",
    add: "Add",
    remove: "remove:",
    write_here: "Write a message; Enter sends, Shift+Enter starts a new line",
    file_path: "Path of a file to send (or drop files or a folder on the window)",
    select_files: "Select Files…",
    send_file: "Send File",
    new_divider: "new",
    change: |by, change| change.describe(by),
    new_messages: |n| format!("{} ↓", plural(n, "new message", "new messages")),
    show_earlier: |n| format!("Show earlier messages ({n} more)"),
    show_later: |n| format!("Show later messages ({n} more)"),
    search_here: "Search this room (Esc closes)",
    found: |n| format!("{n} found"),
    received_by: |who| format!("received by {who}"),
    files: "Files",
    receive_all: |n| format!("Receive all ({n})"),
    open_downloads: "Open downloads",
    devices: "Devices",
    devices_of: |me| format!("Devices of {me}"),
    close: "Close",
    link_device: "Link a new device",
    invite_for_device: "A one-time invite for your other device (valid for a day). Paste it into qchat there, or run `qchat-cli join INVITE --out FILE`:",
    copy: "Copy",
    asking_relay: "asking the relay…",
    identity_file: "identity file",
    joined: |when| format!("joined {when}"),
    last_seen: |when| format!("last seen {when}"),
    never_connected: "never connected",
    this_device: "this device",
    revoke: "Revoke",
    waiting_to_start: "waiting to start",
    uploading: "uploading",
    on_relay: "on the relay, waiting to be fetched",
    received: "received",
    arriving: |held| format!("arriving ({held} on the relay): press Receive to get it as it comes"),
    offered: "offered to you: press Receive",
    downloading_as_it_arrives: "downloading as it arrives",
    downloading: "downloading",
    saved: |path| format!("saved, verified: {path}"),
    failed: |reason| format!("failed: {reason}"),
    expired: "removed from the relay (expired)",
    done_of: |done, size| format!("{done} of {size}"),
    left: |time| format!("{time} left"),
    cancel: "Cancel",
    receive: "Receive",
    open: "Open",
    show_in_folder: "Show in folder",
    connecting: "connecting…",
    connected_as: |me| format!("connected as {me}"),
    reconnecting: |reason| format!("reconnecting: {reason}"),
    refused: |reason| format!("refused: {reason}"),
    closed: "closed",
    online: |peer| format!("{peer} is online"),
    offline: |peer| format!("{peer} is offline"),
    not_connected: "not connected yet; try again in a moment",
    copied: "the message is copied",
    too_many_files: |folder, n, max| {
        format!("{folder} holds more than {} files (at most {max} are sent at once): nothing was sent", n - 1)
    },

    message_kept: "not connected yet; the message stays in the box",
    welcome: "Welcome to qchat",
    paste_invite: "Paste your invite: the line you got from the relay's owner, or from qchat on your other device.",
    device_called: "This device is called",
    device_name: "device name",
    join: "Join",
    joining: "Joining…",
    key_stays: "This PC makes its own key; it never leaves it. The relay only signs a certificate for it.",
    open_saved: "Or open an identity this PC has:",
    identity_path: "or the path of an identity file (NAME.qchat)",
    open_file: "Open file",
    join_title: "qchat — join",
    day: |weekday, day, month, year| {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        format!("{weekday} {day} {} {year}", MONTHS[usize::from(month.clamp(1, 12)) - 1])
    },
};

pub static ZH: Strings = Strings {
    name: "中文",
    rooms: "聊天室",
    new_room: "新建聊天室",
    room_name: "名称",
    room_members: "成员：bob, carol",
    create: "创建",
    chat: "聊天",
    starts_when_written: "（任一方发消息后开始）",
    safety_number: "安全码",
    safety_number_with: |user, number| format!("与 {user} 的安全码（若无人居中截取，对方屏幕上的完全相同）：{number}"),
    leave: "退出",
    add_member: "添加成员",
    add: "添加",
    remove: "移除：",
    write_here: "输入消息；Enter 发送，Shift+Enter 换行",
    file_path: "要发送的文件路径（或把文件、文件夹拖到窗口上）",
    select_files: "选择文件…",
    send_file: "发送文件",
    new_divider: "新消息",
    change: |by, change| match change {
        Change::Created { members } => format!("{by} 创建了聊天室，成员：{}", members.join("、")),
        Change::Added { user } => format!("{by} 添加了 {user}"),
        Change::Removed { user } => format!("{by} 移除了 {user}"),
        Change::Left => format!("{by} 退出了聊天室"),
        Change::Regrouped => format!("{by} 的设备更新了聊天室的加密群组"),
    },
    new_messages: |n| format!("{n} 条新消息 ↓"),
    show_earlier: |n| format!("显示更早的消息（还有 {n} 条）"),
    show_later: |n| format!("显示之后的消息（还有 {n} 条）"),
    search_here: "在此聊天室中搜索（Esc 关闭）",
    found: |n| format!("找到 {n} 条"),
    received_by: |who| format!("已收到：{who}"),
    files: "文件",
    receive_all: |n| format!("全部接收（{n}）"),
    open_downloads: "打开下载文件夹",
    devices: "设备",
    devices_of: |me| format!("{me} 的设备"),
    close: "关闭",
    link_device: "添加新设备",
    invite_for_device: "给你另一台设备的一次性邀请（一天内有效）。在那台设备的 qchat 中粘贴，或运行 `qchat-cli join INVITE --out FILE`：",
    copy: "复制",
    asking_relay: "正在询问中继…",
    identity_file: "身份文件",
    joined: |when| format!("加入于 {when}"),
    last_seen: |when| format!("上次在线 {when}"),
    never_connected: "从未连接",
    this_device: "本设备",
    revoke: "吊销",
    waiting_to_start: "等待开始",
    uploading: "正在上传",
    on_relay: "已在中继上，等待接收",
    received: "对方已接收",
    arriving: |held| format!("正在到达（中继已有 {held}）：点击接收，边传边收"),
    offered: "发给你的文件：点击接收",
    downloading_as_it_arrives: "边到达边下载",
    downloading: "正在下载",
    saved: |path| format!("已保存并校验：{path}"),
    failed: |reason| format!("失败：{reason}"),
    expired: "已从中继删除（过期）",
    done_of: |done, size| format!("{done} / {size}"),
    left: |time| format!("剩余 {time}"),
    cancel: "取消",
    receive: "接收",
    open: "打开",
    show_in_folder: "在文件夹中显示",
    connecting: "正在连接…",
    connected_as: |me| format!("已连接：{me}"),
    reconnecting: |reason| format!("正在重连：{reason}"),
    refused: |reason| format!("被拒绝：{reason}"),
    closed: "已关闭",
    online: |peer| format!("对方 {peer} 在线"),
    offline: |peer| format!("对方 {peer} 离线"),
    not_connected: "尚未连接；请稍后再试",
    copied: "消息已复制",
    too_many_files: |folder, n, max| format!("{folder} 中的文件超过 {} 个（一次最多发送 {max} 个）：未发送", n - 1),
    message_kept: "尚未连接；消息保留在输入框中",
    welcome: "欢迎使用 qchat",
    paste_invite: "粘贴你的邀请：中继管理员给你的那一行，或你另一台设备上 qchat 给出的那一行。",
    device_called: "本设备名称",
    device_name: "设备名称",
    join: "加入",
    joining: "正在加入…",
    key_stays: "本机自己生成密钥，密钥永不离开本机；中继只为它签发证书。",
    open_saved: "或打开本机已有的身份：",
    identity_path: "或身份文件的路径（NAME.qchat）",
    open_file: "打开文件",
    join_title: "qchat — 加入",
    day: |weekday, day, month, year| {
        const WEEKDAYS: [&str; 7] = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"];
        format!("{year}年{month}月{day}日 {}", WEEKDAYS[usize::from(weekday.number_days_from_monday())])
    },
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_follows_the_locale() {
        for (locale, lang) in [
            ("zh_CN.UTF-8", Lang::Zh),
            ("zh-Hans-CN", Lang::Zh),
            ("ZH_tw", Lang::Zh),
            ("en_US.UTF-8", Lang::En),
            ("C", Lang::En),
            ("de-DE", Lang::En),
        ] {
            assert_eq!(Lang::of_locale(locale), lang, "{locale}");
        }
        assert_eq!(Lang::En.other(), Lang::Zh);
    }

    #[test]
    fn days_read_as_people_write_them() {
        assert_eq!((EN.day)(time::Weekday::Tuesday, 1, 12, 2026), "Tuesday 1 December 2026");
        assert_eq!((ZH.day)(time::Weekday::Tuesday, 1, 12, 2026), "2026年12月1日 星期二");
        assert_eq!((ZH.receive_all)(3), "全部接收（3）");
        assert_eq!((EN.new_messages)(1), "1 new message ↓");
    }
}
