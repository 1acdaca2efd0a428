//! Who is asking, and may they: the guard every route passes (its session looked up, its access rule
//! from [`crate::ROUTES`] applied, the CSRF token of every POST checked), and the sign-in steps —
//! password, a new password when the one they hold was generated, the second factor (enrolment with a
//! QR code at first sign-in, then a code each time, or a recovery code) — and sign-out.
//!
//! A wrong password is answered with the same code form a right one gets, and the code form's failure
//! says only that login, password or code was wrong: nothing tells which.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Form, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use kartoteka_engine::control::User;
use kartoteka_engine::web_session::{Stage, WebSession};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::app::{App, Peer};
use crate::html::{Lang, Viewer, esc, page};
use crate::server::{Access, ROUTES};
use crate::totp::Totp;

/// The session cookie's name: `__Host-` (Secure, host-only, path `/`) over HTTPS.
fn session_cookie(app: &App) -> &'static str {
    if app.settings.secure_cookies {
        "__Host-kt"
    } else {
        "kt"
    }
}

/// The pre-sign-in cookie (the sign-in forms' CSRF token, before there is a session).
fn pre_cookie(app: &App) -> &'static str {
    if app.settings.secure_cookies {
        "__Host-kt-pre"
    } else {
        "kt-pre"
    }
}

/// The language cookie.
pub const LANG_COOKIE: &str = "kt-lang";

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path `/`, Secure over HTTPS; `None` clears it.
pub fn cookie(app: &App, name: &str, value: Option<&str>) -> HeaderValue {
    let secure = if app.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let text = match value {
        Some(v) => format!("{name}={v}; Path=/; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    };
    HeaderValue::from_str(&text).expect("cookie values are hex")
}

/// The value of cookie `name` in `headers`.
pub fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// What the guard learned about a request, for its handler.
#[derive(Clone)]
pub struct Ctx {
    /// The page language.
    pub lang: Lang,
    /// The session and its id, when there is one.
    pub session: Option<(Arc<str>, WebSession)>,
    /// The signed-in user (fully signed in only).
    pub user: Option<User>,
    /// Where the request came from.
    pub ip: IpAddr,
    /// The browser's `User-Agent`.
    pub user_agent: String,
    /// The pre-sign-in CSRF token, when the browser holds one.
    pub pre: Option<String>,
}

impl Ctx {
    /// The header's view of the signed-in user.
    pub fn viewer(&self) -> Option<Viewer> {
        let (user, (_, session)) = (self.user.as_ref()?, self.session.as_ref()?);
        Some(Viewer {
            login: user.login.clone(),
            role: user.role,
            csrf: session.csrf.clone(),
        })
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("lang", &self.lang)
            .field("login", &self.session.as_ref().map(|(_, s)| &s.login))
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// A redirect after a form or to the sign-in page (303: the next request is a GET).
pub fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).expect("paths are ASCII"),
        )],
    )
        .into_response()
}

/// A page saying the request is refused.
pub fn forbidden(lang: Lang, viewer: Option<&Viewer>, why: &str) -> Response {
    let body = format!("<p>{}</p>", esc(why));
    (
        StatusCode::FORBIDDEN,
        axum::response::Html(page(
            lang,
            lang.pick("Нет доступа", "Access denied"),
            "/",
            viewer,
            None,
            &body,
        )),
    )
        .into_response()
}

/// A page saying something failed on our side, with what to do.
pub fn trouble(lang: Lang, viewer: Option<&Viewer>, detail: &str) -> Response {
    tracing::warn!(error = %detail, "a page failed");
    let body = format!(
        "<p>{}</p><p class=\"muted\">{}</p>",
        lang.pick(
            "Страницу не удалось построить. Попробуйте ещё раз; если ошибка повторится, \
             передайте администратору текст ниже и время.",
            "The page could not be built. Try again; if it happens again, give the administrator \
             the text below and the time."
        ),
        esc(detail)
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::response::Html(page(
            lang,
            lang.pick("Ошибка", "Error"),
            "/",
            viewer,
            None,
            &body,
        )),
    )
        .into_response()
}

/// The largest form body a POST may carry.
const FORM_LIMIT: usize = 16 * 1024;

/// The guard: the route's rule applied to the request's session, every POST's CSRF token checked, the
/// [`Ctx`] handed on.
pub async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let lang = read_cookie(&parts.headers, LANG_COOKIE).map_or(Lang::Ru, Lang::parse);
    let path = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let Some(route) = ROUTES
        .iter()
        .find(|r| r.path == path && r.method == parts.method.as_str())
    else {
        return (StatusCode::METHOD_NOT_ALLOWED, "").into_response();
    };
    let ip = parts
        .extensions
        .get::<Peer>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |p| p.0.ip());
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let pre = read_cookie(&parts.headers, pre_cookie(&app)).map(str::to_string);
    let mut session = None;
    if route.access != Access::Open
        && let Some(token) = read_cookie(&parts.headers, session_cookie(&app))
    {
        match app
            .control
            .session(token, app.settings.limits, Utc::now())
            .await
        {
            Ok(Some(s)) => session = Some((Arc::<str>::from(token), s)),
            Ok(None) => {}
            Err(e) => return trouble(lang, None, &e.to_string()),
        }
    }
    let full = session
        .as_ref()
        .is_some_and(|(_, s)| s.stage == Stage::Full);
    let half = session
        .as_ref()
        .is_some_and(|(_, s)| s.stage == Stage::Password);
    let mut user = None;
    match route.access {
        Access::Open => {}
        Access::SignIn if full => return see_other("/"),
        Access::SignIn => {}
        Access::SignInStep if full => return see_other("/"),
        Access::SignInStep if !half => return see_other("/login"),
        Access::SignInStep => {}
        Access::AnySession if session.is_none() => return see_other("/login"),
        Access::AnySession => {}
        Access::Signed(_) if !full => return see_other("/login"),
        Access::Signed(roles) => {
            let login = &session.as_ref().expect("full").1.login;
            let found = match app.control.user(login).await {
                Ok(Some(u)) => u,
                Ok(None) => return see_other("/login"),
                Err(e) => return trouble(lang, None, &e.to_string()),
            };
            if !roles.contains(&found.role) {
                let viewer = Viewer {
                    login: found.login.clone(),
                    role: found.role,
                    csrf: session.as_ref().expect("full").1.csrf.clone(),
                };
                return forbidden(
                    lang,
                    Some(&viewer),
                    lang.pick(
                        "Эта страница не для вашей роли.",
                        "This page is not for your role.",
                    ),
                );
            }
            user = Some(found);
        }
    }
    // Every state-changing request carries the form's CSRF token: the session's, or before sign-in
    // the one the pre-sign-in cookie holds.
    let body = if parts.method == Method::POST {
        let bytes = match axum::body::to_bytes(body, FORM_LIMIT).await {
            Ok(b) => b,
            Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "").into_response(),
        };
        let sent: Option<String> = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        // A sign-in form may have been opened before or after a half-way session began: either
        // token it could carry is accepted there; everywhere else only the session's.
        let mut expected: Vec<&str> = Vec::new();
        if let Some((_, s)) = &session {
            expected.push(&s.csrf);
        }
        if (session.is_none() || route.access == Access::SignIn)
            && let Some(pre) = &pre
        {
            expected.push(pre);
        }
        let ok = sent.as_deref().is_some_and(|sent| {
            expected.iter().any(|e| {
                !e.is_empty()
                    && kartoteka_engine::lake::constant_time_eq(sent.as_bytes(), e.as_bytes())
            })
        });
        if !ok {
            return forbidden(
                lang,
                None,
                lang.pick(
                    "Форма устарела или пришла не с этой страницы. Откройте страницу заново и \
                     повторите.",
                    "The form is stale or did not come from this site. Open the page again and retry.",
                ),
            );
        }
        Body::from(bytes)
    } else {
        body
    };
    parts.extensions.insert(Ctx {
        lang,
        session,
        user,
        ip,
        user_agent,
        pre,
    });
    next.run(Request::from_parts(parts, body)).await
}

/// A response with `set` cookies added.
fn with_cookies(mut response: Response, set: &[HeaderValue]) -> Response {
    for c in set {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    response
}

fn html(response_page: String) -> Response {
    axum::response::Html(response_page).into_response()
}

/// A fresh random token (hex, 256 bits).
fn random_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The sign-in form, with `error` above it.
fn login_page(lang: Lang, csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "{error}<form method=\"post\" action=\"/login\" class=\"card\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>{login}<input name=\"login\" autocomplete=\"username\" required autofocus></label>\
         <label>{password}<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">{go}</button></form>",
        csrf = esc(csrf),
        login = lang.pick("Логин", "Login"),
        password = lang.pick("Пароль", "Password"),
        go = lang.pick("Войти", "Sign in"),
    );
    page(
        lang,
        lang.pick("Вход", "Sign in"),
        "/login",
        None,
        None,
        &body,
    )
}

/// The one failure message of sign-in.
fn failed(lang: Lang) -> &'static str {
    lang.pick(
        "Войти не удалось: неверен логин, пароль или код.",
        "Sign-in failed: the login, password or code is wrong.",
    )
}

fn throttled_text(lang: Lang) -> &'static str {
    lang.pick(
        "Слишком много неудачных попыток. Подождите 15 минут и попробуйте снова.",
        "Too many failed attempts. Wait 15 minutes and try again.",
    )
}

/// GET /login.
pub async fn login_form(State(app): State<Arc<App>>, ctx: axum::Extension<Ctx>) -> Response {
    let (csrf, set) = match &ctx.pre {
        Some(pre) if !pre.is_empty() => (pre.clone(), None),
        _ => {
            let token = random_token();
            let set = cookie(&app, pre_cookie(&app), Some(&token));
            (token, Some(set))
        }
    };
    let response = html(login_page(ctx.lang, &csrf, None));
    with_cookies(response, set.as_slice())
}

/// The sign-in form's fields.
#[derive(Deserialize)]
pub struct LoginForm {
    login: String,
    password: String,
}

/// Forms holding a secret print none of it.
macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), "(<redacted>)"))
            }
        }
    )*};
}
redacted_debug!(LoginForm, CodeForm, PasswordForm);

/// POST /login: the password step.
pub async fn login_submit(
    State(app): State<Arc<App>>,
    ctx: axum::Extension<Ctx>,
    Form(form): Form<LoginForm>,
) -> Response {
    let lang = ctx.lang;
    let login = form.login.trim().to_lowercase();
    let csrf = ctx.pre.clone().unwrap_or_default();
    if app.throttled(&login, ctx.ip) {
        let _ = app.audit_sign_in(&login, "throttled", false, ctx.ip, &ctx.user_agent);
        return html(login_page(lang, &csrf, Some(throttled_text(lang))));
    }
    let password = Zeroizing::new(form.password);
    let right = match app.control.check_password(&login, &password).await {
        Ok(right) => right,
        Err(e) => return trouble(lang, None, &e.to_string()),
    };
    if let Err(e) = app.audit_sign_in(&login, "password", right, ctx.ip, &ctx.user_agent) {
        return trouble(lang, None, &e.to_string());
    }
    if !right {
        app.count_failure(&login, ctx.ip);
        // The same next step a right password leads to: the code form, which then fails.
        return html(code_page(lang, &csrf, None));
    }
    // A half-way session this browser already had is replaced, not left behind.
    if let Some((old, _)) = &ctx.session
        && let Err(e) = app.control.end_session(old).await
    {
        return trouble(lang, None, &e.to_string());
    }
    let now = Utc::now();
    let created = app
        .control
        .create_session(
            &login,
            Stage::Password,
            &ctx.ip.to_string(),
            &ctx.user_agent,
            now,
        )
        .await;
    let (token, session) = match created {
        Ok(pair) => pair,
        Err(e) => return trouble(lang, None, &e.to_string()),
    };
    let set = cookie(&app, session_cookie(&app), Some(token.expose()));
    let next = next_step(&app, &ctx, token.expose(), &session).await;
    with_cookies(next, &[set])
}

/// Where a half-signed-in session goes next: a new password, enrolment, the code, or — all done — in.
async fn next_step(app: &App, ctx: &Ctx, token: &str, session: &WebSession) -> Response {
    let lang = ctx.lang;
    let user = match app.control.user(&session.login).await {
        Ok(Some(u)) => u,
        Ok(None) => return see_other("/login"),
        Err(e) => return trouble(lang, None, &e.to_string()),
    };
    if user.must_change_password {
        return see_other("/login/password");
    }
    let enrolled = match second_factor_state(app, &user.login).await {
        Ok(state) => state,
        Err(e) => return trouble(lang, None, &e),
    };
    match enrolled {
        SecondFactor::Confirmed => see_other("/login/code"),
        SecondFactor::Pending | SecondFactor::None
            if app.settings.needs_second_factor(user.role) =>
        {
            see_other("/login/enrol")
        }
        _ => complete(app, ctx, token, &user.login, "password-only").await,
    }
}

/// Sign-in done: the session moves to signed-in under a new id.
async fn complete(app: &App, ctx: &Ctx, token: &str, login: &str, step: &str) -> Response {
    let lang = ctx.lang;
    match app
        .control
        .advance_session(token, Stage::Full, Utc::now())
        .await
    {
        Ok(Some((new, _))) => {
            if let Err(e) = app.audit_sign_in(login, step, true, ctx.ip, &ctx.user_agent) {
                return trouble(lang, None, &e.to_string());
            }
            let mut set = vec![
                cookie(app, session_cookie(app), Some(new.expose())),
                cookie(app, pre_cookie(app), None),
            ];
            // The language this user chose before, in whatever browser.
            if let Ok(Some(chosen)) = app.control.language(login).await {
                set.push(language_cookie(app, Lang::parse(&chosen)));
            }
            with_cookies(see_other("/"), &set)
        }
        Ok(None) => see_other("/login"),
        Err(e) => trouble(lang, None, &e.to_string()),
    }
}

enum SecondFactor {
    None,
    /// A secret shown at enrolment whose first code has not come back yet.
    Pending,
    /// Enrolled: a code has been accepted.
    Confirmed,
}

async fn second_factor_state(app: &App, login: &str) -> Result<SecondFactor, String> {
    let secret = app
        .control
        .totp_secret(login)
        .await
        .map_err(|e| e.to_string())?;
    if secret.is_none() {
        return Ok(SecondFactor::None);
    }
    let last = app
        .control
        .last_totp_step(login)
        .await
        .map_err(|e| e.to_string())?;
    Ok(if last.is_some() {
        SecondFactor::Confirmed
    } else {
        SecondFactor::Pending
    })
}

async fn user_totp(app: &App, login: &str) -> Result<Option<Totp>, String> {
    let Some(sealed) = app
        .control
        .totp_secret(login)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let secret = app
        .engine
        .lake()
        .open_user_secret(&kartoteka_engine::second_factor::totp_aad(login), &sealed)
        .await
        .ok_or_else(|| {
            format!(
                "the second-factor secret of {login} does not open with this lake's keys; the owner \
                 can reset it (`kartoteka users reset-second-factor {login}`)"
            )
        })?;
    Ok(Some(Totp::from_secret(&secret)))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The code form.
fn code_page(lang: Lang, csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "{error}<form method=\"post\" action=\"/login/code\" class=\"card\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>{code}<input name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus></label>\
         <p class=\"muted\">{hint}</p><button type=\"submit\">{go}</button></form>",
        csrf = esc(csrf),
        code = lang.pick("Код из приложения", "Code from the app"),
        hint = lang.pick(
            "Шесть цифр из приложения-аутентификатора. Нет телефона — введите один из кодов \
             восстановления.",
            "Six digits from your authenticator app. No phone? Enter one of your recovery codes."
        ),
        go = lang.pick("Подтвердить", "Confirm"),
    );
    page(
        lang,
        lang.pick("Второй фактор", "Second factor"),
        "/login/code",
        None,
        None,
        &body,
    )
}

fn session_csrf(ctx: &Ctx) -> String {
    ctx.session
        .as_ref()
        .map(|(_, s)| s.csrf.clone())
        .or_else(|| ctx.pre.clone())
        .unwrap_or_default()
}

/// GET /login/code.
pub async fn code_form(ctx: axum::Extension<Ctx>) -> Response {
    html(code_page(ctx.lang, &session_csrf(&ctx), None))
}

/// A one-code form.
#[derive(Deserialize)]
pub struct CodeForm {
    code: String,
}

/// POST /login/code: the second factor (or the end of a sign-in whose password was wrong).
pub async fn code_submit(
    State(app): State<Arc<App>>,
    ctx: axum::Extension<Ctx>,
    Form(form): Form<CodeForm>,
) -> Response {
    let lang = ctx.lang;
    let Some((token, session)) = ctx
        .session
        .clone()
        .filter(|(_, s)| s.stage == Stage::Password)
    else {
        // No half-way session: the password was wrong (already recorded) or the session ended.
        let _ = app.audit_sign_in("", "code", false, ctx.ip, &ctx.user_agent);
        return html(login_page(lang, &session_csrf(&ctx), Some(failed(lang))));
    };
    let login = session.login.clone();
    if app.throttled(&login, ctx.ip) {
        let _ = app.audit_sign_in(&login, "throttled", false, ctx.ip, &ctx.user_agent);
        return html(code_page(lang, &session.csrf, Some(throttled_text(lang))));
    }
    let totp = match user_totp(&app, &login).await {
        Ok(Some(t)) => t,
        Ok(None) => return see_other("/login/enrol"),
        Err(e) => return trouble(lang, None, &e),
    };
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    let accepted = if code.len() == 6 {
        let last = match app.control.last_totp_step(&login).await {
            Ok(l) => l,
            Err(e) => return trouble(lang, None, &e.to_string()),
        };
        match totp.verify(&code, unix_now(), last) {
            // Stored in one statement: a code racing itself is accepted once.
            Some(step) => app
                .control
                .accept_totp_step(&login, step)
                .await
                .unwrap_or(false),
            None => false,
        }
    } else {
        app.control
            .use_recovery_code(&login, &code)
            .await
            .unwrap_or(false)
    };
    if !accepted {
        app.count_failure(&login, ctx.ip);
        let _ = app.audit_sign_in(&login, "code", false, ctx.ip, &ctx.user_agent);
        return html(code_page(lang, &session.csrf, Some(failed(lang))));
    }
    let step = if code.len() == 6 {
        "code"
    } else {
        "recovery-code"
    };
    complete(&app, &ctx, &token, &login, step).await
}

/// The new-password form.
fn password_page(lang: Lang, csrf: &str, min: usize, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<p>{intro}</p>{error}<form method=\"post\" action=\"/login/password\" class=\"card\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>{new}<input name=\"new\" type=\"password\" autocomplete=\"new-password\" minlength=\"{min}\" maxlength=\"128\" required autofocus></label>\
         <label>{again}<input name=\"again\" type=\"password\" autocomplete=\"new-password\" required></label>\
         <button type=\"submit\">{go}</button></form>",
        intro = esc(&match lang {
            Lang::Ru => format!(
                "Пароль, с которым вы вошли, был выдан вам один раз. Придумайте свой: не короче \
                 {min} символов, удобнее всего — фраза из нескольких слов. Цифры и знаки не \
                 обязательны."
            ),
            Lang::En => format!(
                "The password you signed in with was issued once. Choose your own: at least {min} \
                 characters; a phrase of several words is easiest. Digits and symbols are not \
                 required."
            ),
        }),
        csrf = esc(csrf),
        new = lang.pick("Новый пароль", "New password"),
        again = lang.pick("Ещё раз", "Again"),
        go = lang.pick("Сохранить", "Save"),
    );
    page(
        lang,
        lang.pick("Новый пароль", "New password"),
        "/login/password",
        None,
        None,
        &body,
    )
}

fn min_length(app: &App, user: &User) -> usize {
    if app.settings.needs_second_factor(user.role) {
        kartoteka_engine::password::MIN_WITH_SECOND_FACTOR
    } else {
        kartoteka_engine::password::MIN_WITHOUT_SECOND_FACTOR
    }
}

/// The half-way session's user, or where to go instead.
async fn half_user(app: &App, ctx: &Ctx) -> Result<(Arc<str>, WebSession, User), Response> {
    let Some((token, session)) = ctx.session.clone() else {
        return Err(see_other("/login"));
    };
    match app.control.user(&session.login).await {
        Ok(Some(user)) => Ok((token, session, user)),
        Ok(None) => Err(see_other("/login")),
        Err(e) => Err(trouble(ctx.lang, None, &e.to_string())),
    }
}

/// GET /login/password.
pub async fn password_form(State(app): State<Arc<App>>, ctx: axum::Extension<Ctx>) -> Response {
    let (_, session, user) = match half_user(&app, &ctx).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if !user.must_change_password {
        return see_other("/login/code");
    }
    html(password_page(
        ctx.lang,
        &session.csrf,
        min_length(&app, &user),
        None,
    ))
}

/// The new password, twice.
#[derive(Deserialize)]
pub struct PasswordForm {
    new: String,
    again: String,
}

/// POST /login/password.
pub async fn password_submit(
    State(app): State<Arc<App>>,
    ctx: axum::Extension<Ctx>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let lang = ctx.lang;
    let (token, session, user) = match half_user(&app, &ctx).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if !user.must_change_password {
        return see_other("/login/code");
    }
    let min = min_length(&app, &user);
    let (new, again) = (Zeroizing::new(form.new), Zeroizing::new(form.again));
    if *new != *again {
        let text = lang.pick(
            "Пароли в двух полях не совпали.",
            "The two passwords differ.",
        );
        return html(password_page(lang, &session.csrf, min, Some(text)));
    }
    let second = app.settings.needs_second_factor(user.role);
    match app.control.set_password(&user.login, &new, second).await {
        Ok(Ok(())) => {
            let _ = app.audit_sign_in(&user.login, "new-password", true, ctx.ip, &ctx.user_agent);
            next_step(&app, &ctx, &token, &session).await
        }
        Ok(Err(weak)) => {
            let text = match lang {
                Lang::Ru => weak.ru(),
                Lang::En => weak.en(),
            };
            html(password_page(lang, &session.csrf, min, Some(&text)))
        }
        Err(e) => trouble(lang, None, &e.to_string()),
    }
}

/// GET /login/enrol: the QR code of a new (or still unconfirmed) secret, and a code form.
pub async fn enrol_form(State(app): State<Arc<App>>, ctx: axum::Extension<Ctx>) -> Response {
    let lang = ctx.lang;
    let (_, session, user) = match half_user(&app, &ctx).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    if user.must_change_password {
        return see_other("/login/password");
    }
    let state = match second_factor_state(&app, &user.login).await {
        Ok(s) => s,
        Err(e) => return trouble(lang, None, &e),
    };
    let totp = match state {
        SecondFactor::Confirmed => return see_other("/login/code"),
        SecondFactor::Pending => match user_totp(&app, &user.login).await {
            Ok(Some(t)) => t,
            Ok(None) => return see_other("/login"),
            Err(e) => return trouble(lang, None, &e),
        },
        SecondFactor::None => {
            let totp = Totp::generate();
            let sealed = app
                .engine
                .lake()
                .seal_user_secret(
                    &kartoteka_engine::second_factor::totp_aad(&user.login),
                    totp.secret(),
                )
                .await;
            if let Err(e) = app
                .control
                .set_totp_secret(&user.login, &sealed, &user.login)
                .await
            {
                return trouble(lang, None, &e.to_string());
            }
            totp
        }
    };
    html(enrol_page(lang, &session.csrf, &user.login, &totp, None))
}

fn enrol_page(lang: Lang, csrf: &str, login: &str, totp: &Totp, error: Option<&str>) -> String {
    let uri = totp.uri("Kartoteka", login);
    let qr = crate::qr::svg(
        &uri,
        232,
        lang.pick("QR-код для приложения", "QR code for the app"),
    )
    .unwrap_or_default();
    let secret = totp.secret_base32();
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "<p>{intro}</p><div class=\"enrol\"><figure class=\"qr\">{qr}</figure>\
         <p>{manual}<br><code class=\"secret\">{secret}</code></p></div>{error}\
         <form method=\"post\" action=\"/login/enrol\" class=\"card\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <label>{code}<input name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required autofocus></label>\
         <button type=\"submit\">{go}</button></form>",
        intro = lang.pick(
            "Для входа нужен второй фактор. Отсканируйте код приложением-аутентификатором \
             (Яндекс Ключ, Google Authenticator, FreeOTP, 1Password…) и введите шесть цифр, \
             которые оно покажет.",
            "Signing in needs a second factor. Scan the code with an authenticator app (Google \
             Authenticator, FreeOTP, 1Password…) and enter the six digits it shows."
        ),
        manual = lang.pick("Или введите ключ вручную:", "Or enter the key by hand:"),
        secret = esc(&grouped.join(" ")),
        csrf = esc(csrf),
        code = lang.pick("Код из приложения", "Code from the app"),
        go = lang.pick("Подтвердить", "Confirm"),
    );
    page(
        lang,
        lang.pick("Подключение второго фактора", "Set up the second factor"),
        "/login/enrol",
        None,
        None,
        &body,
    )
}

/// POST /login/enrol: the first code from the new secret confirms it; the recovery codes are shown
/// once and the user is in.
pub async fn enrol_submit(
    State(app): State<Arc<App>>,
    ctx: axum::Extension<Ctx>,
    Form(form): Form<CodeForm>,
) -> Response {
    let lang = ctx.lang;
    let (token, session, user) = match half_user(&app, &ctx).await {
        Ok(found) => found,
        Err(r) => return r,
    };
    let totp = match second_factor_state(&app, &user.login).await {
        Ok(SecondFactor::Pending) => match user_totp(&app, &user.login).await {
            Ok(Some(t)) => t,
            Ok(None) => return see_other("/login/enrol"),
            Err(e) => return trouble(lang, None, &e),
        },
        Ok(SecondFactor::Confirmed) => return see_other("/login/code"),
        Ok(SecondFactor::None) => return see_other("/login/enrol"),
        Err(e) => return trouble(lang, None, &e),
    };
    let accepted = match totp.verify(&form.code, unix_now(), None) {
        Some(step) => app
            .control
            .accept_totp_step(&user.login, step)
            .await
            .unwrap_or(false),
        None => false,
    };
    if !accepted {
        let _ = app.audit_sign_in(&user.login, "enrol", false, ctx.ip, &ctx.user_agent);
        let text = lang.pick(
            "Код не подошёл. Проверьте время на телефоне и введите новый код.",
            "The code did not match. Check the phone's clock and enter a new code.",
        );
        return html(enrol_page(
            lang,
            &session.csrf,
            &user.login,
            &totp,
            Some(text),
        ));
    }
    let codes = match app
        .control
        .new_recovery_codes(&user.login, &user.login)
        .await
    {
        Ok(c) => c,
        Err(e) => return trouble(lang, None, &e.to_string()),
    };
    let signed_in = complete(&app, &ctx, &token, &user.login, "enrol").await;
    if signed_in.status() != StatusCode::SEE_OTHER {
        return signed_in;
    }
    let list: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", esc(c.expose())))
        .collect();
    let body = format!(
        "<p>{intro}</p><ol class=\"codes\">{list}</ol><p><a class=\"button\" href=\"/\">{go}</a></p>",
        intro = lang.pick(
            "Второй фактор подключён. Сохраните коды восстановления в надёжном месте: каждый \
             заменяет код из приложения один раз, если телефона не окажется под рукой. Больше \
             они показаны не будут.",
            "The second factor is set up. Keep these recovery codes somewhere safe: each one \
             replaces an app code once, when the phone is not at hand. They will not be shown again."
        ),
        go = lang.pick("Продолжить", "Continue"),
    );
    let mut response = html(page(
        lang,
        lang.pick("Коды восстановления", "Recovery codes"),
        "/login/enrol",
        None,
        None,
        &body,
    ));
    // The signed-in session's cookie from `complete`.
    for c in signed_in.headers().get_all(header::SET_COOKIE) {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    response
}

/// POST /logout.
pub async fn logout(State(app): State<Arc<App>>, ctx: axum::Extension<Ctx>) -> Response {
    if let Some((token, session)) = &ctx.session {
        if let Err(e) = app.control.end_session(token).await {
            return trouble(ctx.lang, None, &e.to_string());
        }
        let _ = app.audit(kartoteka_engine::audit::Event {
            actor: session.login.clone(),
            action: kartoteka_engine::audit::action::WEB_SIGN_OUT.into(),
            target: session.login.clone(),
            details: serde_json::json!({ "ip": ctx.ip.to_string() }),
            outcome: kartoteka_engine::audit::Outcome::Ok,
        });
    }
    with_cookies(
        see_other("/login"),
        &[cookie(&app, session_cookie(&app), None)],
    )
}

/// GET /language?to=en&back=/owner: remember the language (in a cookie, and for a signed-in user in
/// the control plane, so their next browser opens in it too), go back.
pub async fn language(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<LanguageQuery>,
) -> Response {
    let lang = Lang::parse(&q.to);
    if let Some(token) = read_cookie(&headers, session_cookie(&app))
        && let Ok(Some(session)) = app
            .control
            .session(token, app.settings.limits, Utc::now())
            .await
        && session.stage == Stage::Full
        && let Err(e) = app.control.set_language(&session.login, lang.code()).await
    {
        return trouble(lang, None, &e.to_string());
    }
    // Only a path on this site: never an open redirect.
    let back = q
        .back
        .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.contains('\\'))
        .unwrap_or_else(|| "/".into());
    let set = language_cookie(&app, lang);
    match HeaderValue::from_str(&back) {
        Ok(_) => with_cookies(see_other(&back), &[set]),
        Err(_) => with_cookies(see_other("/"), &[set]),
    }
}

/// The language cookie for `lang` (a year; not HttpOnly-critical, but kept HttpOnly all the same).
fn language_cookie(app: &App, lang: Lang) -> HeaderValue {
    let secure = if app.settings.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age=31536000{secure}",
        lang.code()
    ))
    .expect("ascii")
}

/// The language link's query.
#[derive(Debug, Deserialize)]
pub struct LanguageQuery {
    to: String,
    back: Option<String>,
}
