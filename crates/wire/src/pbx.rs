//! Names in 3CX's web server protocol that the client and the simulated 3CX share.

/// The cookie in which 3CX's webclient sign-in (`/webclient/api/Login/GetAccessToken`)
/// returns its rotating refresh token (undocumented; `shared/notes/3cx.md` §2).
pub const REFRESH_COOKIE: &str = "RefreshTokenCookie";
