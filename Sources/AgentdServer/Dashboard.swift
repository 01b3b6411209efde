import AgentdCore
import AgentdModel
import HTTPTypes
import Hummingbird
import NIOCore
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The web dashboard: its assets (compiled in at build time by the DashboardAssets plugin)
/// and its sign-in routes.  The dashboard is a client of the same /v1 API as
/// agentctl; a signed-in browser is authenticated by the `agentd_ui` cookie
/// (HttpOnly, SameSite=Strict) instead of a bearer key, and its
/// state-changing requests must carry the sign-in's CSRF token.  The routes
/// are not part of the OpenAPI document: they serve a browser, not clients.
enum Dashboard {
    static let cookieName = "agentd_ui"
    static let csrfHeader = HTTPField.Name("X-CSRF-Token")!
    /// Paths the auth middleware lets through without a key or cookie.
    static let openPaths: Set<String> = ["/", "/ui", "/ui/", "/ui/app.js", "/ui/app.css", "/ui/login"]
    /// The routes `register` adds (for the 405 answers' Allow header).
    static let routes: [(String, String)] = [
        ("GET", "/"), ("GET", "/ui/"), ("GET", "/ui/app.js"), ("GET", "/ui/app.css"), ("POST", "/ui/login"),
        ("GET", "/ui/session"), ("POST", "/ui/logout"),
    ]

    /// Everything the page may load comes from agentd itself; it may not be
    /// framed, and nothing it loads may send the page's address elsewhere.
    static let assetHeaders: HTTPFields = [
        HTTPField.Name("Content-Security-Policy")!:
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            + "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        HTTPField.Name("X-Content-Type-Options")!: "nosniff",
        HTTPField.Name("Referrer-Policy")!: "no-referrer",
        HTTPField.Name("X-Frame-Options")!: "DENY",
        .cacheControl: "no-cache",
    ]

    static func asset(_ text: String, type: String) -> Response {
        var headers = assetHeaders
        headers[.contentType] = type
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func redirect(_ to: String) -> Response {
        Response(status: .found, headers: [.location: to, .cacheControl: "no-cache"])
    }

    static func register(on router: Router<AgentdContext>, services: Services) {
        router.get("/") { _, _ -> Response in redirect("/ui/") }
        router.get("/ui/") { _, _ -> Response in asset(DashboardAssets.indexHTML, type: "text/html; charset=utf-8") }
        router.get("/ui/app.js") { _, _ -> Response in
            asset(DashboardAssets.appJS, type: "text/javascript; charset=utf-8")
        }
        router.get("/ui/app.css") { _, _ -> Response in asset(DashboardAssets.appCSS, type: "text/css; charset=utf-8") }

        router.post("/ui/login") { request, _ -> Response in
            try requireSameOrigin(request)
            guard request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true else {
                // A cross-site form cannot send JSON without a preflight.
                throw AgentdError(status: 415, code: "unsupported_media_type",
                                  message: "send the key as JSON: {\"key\": \"agentd_...\"}")
            }
            struct In: Decodable { var key: String }
            let input = try await HTTP.decode(In.self, from: request, allowed: ["key"], limit: 4096)
            let (token, signIn) = try await services.signIns.signIn(key: input.key.trimmingSpaces)
            var response = try HTTP.json(try await whoAmI(services, signIn))
            response.headers[.setCookie] = cookie(token, maxAge: Int(SignInService.idle), request: request)
            response.headers[.cacheControl] = "no-store"
            return response
        }
        router.get("/ui/session") { _, context -> Response in
            guard let signIn = context.signIn else {
                throw AgentdError(status: 401, code: "unauthorized", message: "not signed in to the dashboard")
            }
            var response = try HTTP.json(try await whoAmI(services, signIn))
            response.headers[.cacheControl] = "no-store"
            return response
        }
        // Reached only with a live sign-in and its CSRF token (auth middleware).
        router.post("/ui/logout") { request, _ -> Response in
            if let token = cookieValue(request) { try await services.signIns.signOut(token: token) }
            return Response(status: .noContent,
                            headers: [.setCookie: cookie("", maxAge: 0, request: request), .cacheControl: "no-store"])
        }
    }

    /// What the page shows of the caller, and the CSRF token it must send.
    struct WhoAmI: Encodable {
        struct Me: Encodable {
            var keyId: String
            var teamId: String
            var teamName: String?
            var role: String
            enum CodingKeys: String, CodingKey {
                case keyId = "key_id", teamId = "team_id", teamName = "team_name", role
            }
        }
        var identity: Me
        var csrf: String
    }

    static func whoAmI(_ services: Services, _ signIn: SignIn) async throws -> WhoAmI {
        let me = signIn.identity
        let team = try await services.store.teams(id: me.teamID).first
        return WhoAmI(identity: .init(keyId: me.keyID, teamId: me.teamID, teamName: team?.name, role: me.role.rawValue),
                      csrf: signIn.csrf)
    }

    static func cookie(_ value: String, maxAge: Int, request: Request) -> String {
        var c = "\(cookieName)=\(value); Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Strict"
        // agentd itself speaks plain HTTP (loopback or behind a TLS proxy);
        // behind a proxy that says it terminated TLS, the cookie is Secure.
        if request.headers[HTTPField.Name("X-Forwarded-Proto")!]?.lowercased() == "https" { c += "; Secure" }
        return c
    }

    /// The `agentd_ui` cookie's value, if the request has one.
    static func cookieValue(_ request: Request) -> String? {
        for header in request.headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let pair = part.drop { $0 == " " }
                if pair.hasPrefix(cookieName + "=") {
                    let value = pair.dropFirst(cookieName.count + 1)
                    return value.isEmpty ? nil : String(value)
                }
            }
        }
        return nil
    }

    /// Browsers send Origin on cross-site and on same-origin POSTs; when it
    /// is there, it must name the host the request was sent to.
    static func requireSameOrigin(_ request: Request) throws {
        guard let origin = request.headers[.origin] else { return }
        let host = request.head.authority ?? ""
        guard origin == "http://\(host)" || origin == "https://\(host)" else {
            throw AgentdError.forbidden("cross-origin request refused (Origin \(origin))")
        }
    }
}
