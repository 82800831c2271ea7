//! The rooms this user is in, as the client knows them: the relay's listing after each
//! connect, then each change of members as it is delivered (in the room's order, so a
//! change older than the listing is not applied twice), and who is online.

use std::collections::{BTreeMap, BTreeSet};

use qchat_shared::frame::{Body, Member, RoomInfo, Status};
use qchat_shared::names::{direct_pair, direct_room};

/// What the client asks about rooms; the answers come as events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomRequest {
    /// The rooms ([`crate::Event::Rooms`]).
    List,
    /// A room of ours with these members ([`crate::Event::Room`]).
    Create { name: String, members: Vec<String> },
    /// Adds a user to a room we created.
    Add { room: String, user: String },
    /// Removes a member from a room we created.
    Remove { room: String, user: String },
    /// Leaves a room.
    Leave { room: String },
}

/// Our rooms by name.
#[derive(Debug, Clone, Default)]
pub struct Rooms {
    rooms: BTreeMap<String, RoomInfo>,
    /// A listing's pages so far.
    listing: Vec<RoomInfo>,
    /// Who is online, as the relay last said, for members a change brings in.
    online: BTreeSet<String>,
    /// We were added to a room: only the relay's listing says who else is in it.
    stale: bool,
}

impl Rooms {
    /// Takes a page of the relay's listing; true once the last page replaced what we knew.
    pub fn listed(&mut self, page: Vec<RoomInfo>, last: bool) -> bool {
        self.listing.extend(page);
        if !last {
            return false;
        }
        let listing = std::mem::take(&mut self.listing);
        listing.iter().for_each(|r| self.saw(r));
        self.rooms = listing.into_iter().map(|r| (r.name.clone(), r)).collect();
        true
    }

    /// Notes who the relay says is online in `room`.
    fn saw(&mut self, room: &RoomInfo) {
        for member in &room.members {
            if member.online {
                self.online.insert(member.user.clone());
            } else {
                self.online.remove(&member.user);
            }
        }
    }

    /// Takes one room as the relay says it is now (the answer to a request).
    pub fn update(&mut self, me: &str, room: RoomInfo) {
        self.saw(&room);
        if room.has(me) {
            self.rooms.insert(room.name.clone(), room);
        } else {
            self.rooms.remove(&room.name);
        }
    }

    /// Applies a change of `room`'s members made by `by`, numbered `room_seq`; false when
    /// it was known already.
    pub fn apply(&mut self, me: &str, (room, room_seq): (&str, u64), by: &str, change: &Body) -> bool {
        if self.rooms.get(room).is_some_and(|r| r.last_seq >= room_seq) {
            return false;
        }
        let online = &self.online;
        let member = |user: &str| Member { user: user.to_string(), online: online.contains(user) };
        match change {
            Body::Created { members } => {
                let direct = direct_pair(room).is_some();
                // In the relay's order: those who came at once, by name.
                let mut members: Vec<Member> = members.iter().map(|m| member(m)).collect();
                members.sort_by(|a, b| a.user.cmp(&b.user));
                let info = RoomInfo {
                    name: room.to_string(),
                    direct,
                    creator: (!direct).then(|| by.to_string()),
                    members,
                    last_seq: room_seq,
                };
                self.rooms.insert(room.to_string(), info);
                return true;
            }
            Body::Added { user } if user == me && !self.rooms.contains_key(room) => {
                // We were added: until the relay's listing comes, we know of two.
                self.stale = true;
                let info = RoomInfo {
                    name: room.to_string(),
                    direct: false,
                    creator: Some(by.to_string()),
                    members: vec![member(by), member(me)],
                    last_seq: room_seq,
                };
                self.rooms.insert(room.to_string(), info);
                return true;
            }
            _ => {}
        }
        let gone = match change {
            Body::Removed { user } => Some(user.as_str()),
            Body::Left => Some(by),
            _ => None,
        };
        if gone == Some(me) {
            return self.rooms.remove(room).is_some();
        }
        let Some(info) = self.rooms.get_mut(room) else { return false };
        info.last_seq = room_seq;
        match (change, gone) {
            (Body::Added { user }, _) if !info.has(user) => info.members.push(member(user)),
            (_, Some(gone)) => {
                info.members.retain(|m| m.user != gone);
                if info.creator.as_deref() == Some(gone) {
                    info.creator = info.members.first().map(|m| m.user.clone());
                }
            }
            _ => {}
        }
        true
    }

    /// Whether to ask the relay for the rooms (we were added to one); asks once.
    pub fn take_stale(&mut self) -> bool {
        std::mem::take(&mut self.stale)
    }

    /// Someone came online or went offline.
    pub fn presence(&mut self, user: &str, online: bool) {
        if online {
            self.online.insert(user.to_string());
        } else {
            self.online.remove(user);
        }
        for member in self.rooms.values_mut().flat_map(|r| r.members.iter_mut()).filter(|m| m.user == user) {
            member.online = online;
        }
    }

    pub fn get(&self, name: &str) -> Option<&RoomInfo> {
        self.rooms.get(name)
    }

    /// Every room, by name.
    pub fn list(&self) -> Vec<RoomInfo> {
        self.rooms.values().cloned().collect()
    }

    /// The room a command names: `room` if we are in it, the direct room with `to` (made
    /// when first written to), or, with neither, none (the relay picks the default). The
    /// error says what is wrong, for the user.
    pub fn target(&self, me: &str, room: Option<&str>, to: Option<&str>) -> Result<Option<String>, String> {
        match (room, to) {
            (Some(_), Some(_)) => Err("name a room (--room) or a person (--to), not both".into()),
            (Some(room), None) if self.rooms.contains_key(room) => Ok(Some(room.to_string())),
            (Some(room), None) => Err(format!("you are not in a room named {room}")),
            (None, Some(user)) if user == me => Err("a direct conversation is with someone else".into()),
            (None, Some(user)) => {
                qchat_shared::names::validate_user_name(user)?;
                Ok(Some(direct_room(me, user)))
            }
            (None, None) => Ok(None),
        }
    }

    /// The room a message goes to by default, as the relay will pick it: our only room,
    /// or the direct room with the relay's only other user; none when one must be named.
    pub fn default_room(&self, status: &Status) -> Option<String> {
        match (self.rooms.len(), &status.peer) {
            (1, _) => self.rooms.keys().next().cloned(),
            (_, Some(peer)) => Some(direct_room(&status.user, peer)),
            _ => None,
        }
    }
}

/// What a room calls itself to `me`: its name, or for a direct room the other person.
pub fn title(me: &str, room: &str) -> String {
    match direct_pair(room) {
        Some((a, b)) => (if a == me { b } else { a }).to_string(),
        None => format!("#{room}"),
    }
}

/// A change of a room's members or of its encryption group, as a chat line keeps it (so
/// that a window can tell it in its own language).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Created {
        members: Vec<String>,
    },
    Added {
        user: String,
    },
    Removed {
        user: String,
    },
    Left,
    /// A device of the sender changed the room's encryption group.
    Regrouped,
}

impl Change {
    /// The change `body` makes, if it is one (not a message).
    pub fn of(body: &Body) -> Option<Change> {
        Some(match body {
            Body::Text(_) | Body::Sealed(_) => return None,
            Body::Created { members } => Change::Created { members: members.clone() },
            Body::Added { user } => Change::Added { user: user.clone() },
            Body::Removed { user } => Change::Removed { user: user.clone() },
            Body::Left => Change::Left,
            Body::Commit { .. } => Change::Regrouped,
        })
    }

    /// The change in English words (`by` made it).
    pub fn describe(&self, by: &str) -> String {
        match self {
            Change::Created { members } => format!("{by} made the room with {}", members.join(", ")),
            Change::Added { user } => format!("{by} added {user}"),
            Change::Removed { user } => format!("{by} removed {user}"),
            Change::Left => format!("{by} left"),
            Change::Regrouped => format!("{by}'s device changed the room's encryption group"),
        }
    }
}

/// What `body` says in words, for a chat line (`by` sent it).
pub fn describe(by: &str, body: &Body) -> String {
    match (body, Change::of(body)) {
        (Body::Text(text), _) => text.clone(),
        (_, Some(change)) => change.describe(by),
        (_, None) => format!("{by} wrote (encrypted)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(rooms: &mut Rooms, members: &[&str]) {
        let members = members.iter().map(|m| m.to_string()).collect();
        assert!(rooms.apply("alice", ("team", 1), "alice", &Body::Created { members }));
    }

    #[test]
    fn changes_apply_once_in_order_and_a_removal_takes_the_room_away() {
        let mut rooms = Rooms::default();
        created(&mut rooms, &["alice", "bob"]);
        assert!(!rooms.apply("alice", ("team", 1), "alice", &Body::Left), "known already");
        assert!(rooms.apply("alice", ("team", 2), "alice", &Body::Added { user: "carol".into() }));
        let names: Vec<String> = rooms.get("team").unwrap().members.iter().map(|m| m.user.clone()).collect();
        assert_eq!(names, ["alice", "bob", "carol"]);
        rooms.presence("bob", true);
        assert!(rooms.get("team").unwrap().members[1].online);
        assert!(rooms.apply("alice", ("team", 3), "alice", &Body::Left));
        assert!(rooms.get("team").is_none(), "we left");

        let mut bobs = Rooms::default();
        assert!(bobs.apply(
            "bob",
            ("team", 1),
            "alice",
            &Body::Created { members: vec!["alice".into(), "bob".into()] }
        ));
        assert!(bobs.apply("bob", ("team", 2), "alice", &Body::Left));
        assert_eq!(bobs.get("team").unwrap().creator.as_deref(), Some("bob"), "the one there longest takes over");
        assert!(bobs.apply("bob", ("team", 3), "bob", &Body::Removed { user: "bob".into() }));
        assert!(bobs.list().is_empty());
    }

    #[test]
    fn a_listing_replaces_what_was_known_and_targets_are_checked() {
        let mut rooms = Rooms::default();
        created(&mut rooms, &["alice", "bob"]);
        assert!(!rooms.listed(vec![], false));
        assert!(rooms.listed(vec![], true));
        assert!(rooms.list().is_empty());
        assert_eq!(rooms.target("alice", Some("team"), None).unwrap_err(), "you are not in a room named team");
        assert_eq!(rooms.target("alice", None, Some("bob")).unwrap(), Some("alice+bob".to_string()));
        assert!(rooms.target("alice", None, Some("alice")).is_err());
        assert!(rooms.target("alice", Some("x"), Some("bob")).is_err());
        assert_eq!(rooms.target("alice", None, None).unwrap(), None);
        assert_eq!(title("alice", "alice+bob"), "bob");
        assert_eq!(title("alice", "team"), "#team");
    }
}
