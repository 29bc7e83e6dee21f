//! Exclusive advisory locks on files under `<root>/kiln/`.
//!
//! flock locks belong to an open file description, so two `Store`s (threads
//! or processes) exclude each other, and the lock goes away with the process
//! if kiln is killed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::StoreError;

/// Held until dropped.
#[derive(Debug)]
pub struct StoreLock {
    _flock: Flock<File>,
    path: PathBuf,
}

impl StoreLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes an exclusive lock on `path`, waiting (with one log line) if another
/// holder has it.
pub(crate) fn acquire(path: &Path, what: &str) -> Result<StoreLock, StoreError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| StoreError::Io { action: "open lock file", path: path.to_path_buf(), source })
    };
    let lock_err =
        |errno: Errno| StoreError::Io { action: "lock", path: path.to_path_buf(), source: std::io::Error::from(errno) };
    let flock = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
        Ok(flock) => flock,
        Err((file, Errno::EWOULDBLOCK)) => {
            log::info!("waiting for another kiln process to release the {what} lock ({})", path.display());
            lock_blocking(file).map_err(lock_err)?
        }
        Err((_, errno)) => return Err(lock_err(errno)),
    };
    Ok(StoreLock { _flock: flock, path: path.to_path_buf() })
}

fn lock_blocking(mut file: File) -> Result<Flock<File>, Errno> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(flock) => return Ok(flock),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, errno)) => return Err(errno),
        }
    }
}

/// The lock every running build holds shared, and that garbage collection
/// takes exclusively, so GC never deletes what a build is about to reuse.
#[derive(Debug)]
pub struct BuildsLock {
    _flock: Flock<File>,
}

impl BuildsLock {
    /// Shared hold for a build. `when_alone` runs first if no other build is
    /// running (the lock could be taken exclusively): the time to clear
    /// leftovers of builds that were killed.
    pub(crate) fn shared(path: &Path, when_alone: impl FnOnce()) -> Result<BuildsLock, StoreError> {
        let file = open_lock_file(path)?;
        let lock_err = |errno: Errno| StoreError::Io {
            action: "lock",
            path: path.to_path_buf(),
            source: std::io::Error::from(errno),
        };
        let flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => {
                when_alone();
                flock.relock(FlockArg::LockShared).map_err(lock_err)?;
                flock
            }
            Err((file, Errno::EWOULDBLOCK)) => match Flock::lock(file, FlockArg::LockShared) {
                Ok(flock) => flock,
                Err((_, errno)) => return Err(lock_err(errno)),
            },
            Err((_, errno)) => return Err(lock_err(errno)),
        };
        Ok(BuildsLock { _flock: flock })
    }

    /// Exclusive hold if no kiln holds the lock now (no build, pull, run or
    /// collection is running); `None` otherwise. Never waits.
    pub(crate) fn try_exclusive(path: &Path) -> Result<Option<BuildsLock>, StoreError> {
        let file = open_lock_file(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Some(BuildsLock { _flock: flock })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, errno)) => {
                Err(StoreError::Io { action: "lock", path: path.to_path_buf(), source: std::io::Error::from(errno) })
            }
        }
    }

    /// Exclusive hold for garbage collection; waits for running builds.
    pub(crate) fn exclusive(path: &Path) -> Result<BuildsLock, StoreError> {
        let file = open_lock_file(path)?;
        let lock_err = |errno: Errno| StoreError::Io {
            action: "lock",
            path: path.to_path_buf(),
            source: std::io::Error::from(errno),
        };
        let flock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => flock,
            Err((file, Errno::EWOULDBLOCK)) => {
                // Said by default: a `kiln run -it` session can hold it for long.
                log::warn!(
                    "waiting for running kiln builds, pulls, loads and runs to finish before removing anything ({})",
                    path.display()
                );
                lock_blocking(file).map_err(lock_err)?
            }
            Err((_, errno)) => return Err(lock_err(errno)),
        };
        Ok(BuildsLock { _flock: flock })
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(|source| StoreError::Io {
        action: "open lock file",
        path: path.to_path_buf(),
        source,
    })
}
