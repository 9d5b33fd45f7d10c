import { Suspense, createContext, lazy, useContext, useEffect, useState, type FormEvent } from "react";
import { NavLink, Route, Routes } from "react-router-dom";
import { claims, getToken, role, setToken, type Role } from "./api";

// One chunk per page, loaded when first opened: the sign-in page and the shell stay small
// (recharts, the wizard and the typed client's messages load with the pages that use them).
const Overview = lazy(() => import("./pages/Overview").then((m) => ({ default: m.Overview })));
const Models = lazy(() => import("./pages/Models").then((m) => ({ default: m.Models })));
const Policies = lazy(() => import("./pages/Policies").then((m) => ({ default: m.Policies })));
const Deployments = lazy(() => import("./pages/Deployments").then((m) => ({ default: m.Deployments })));
const Monitoring = lazy(() => import("./pages/Monitoring").then((m) => ({ default: m.Monitoring })));
const Settings = lazy(() => import("./pages/Settings").then((m) => ({ default: m.Settings })));

export const PAGES = [
  { path: "/", label: "Overview", element: <Overview /> },
  { path: "/models", label: "Models", element: <Models /> },
  { path: "/policies", label: "Policies", element: <Policies /> },
  { path: "/deployments", label: "Deployments", element: <Deployments /> },
  { path: "/monitoring", label: "Monitoring", element: <Monitoring /> },
  { path: "/settings", label: "Settings", element: <Settings /> },
] as const;

type Theme = "default" | "high-contrast";

export const RoleContext = createContext<Role>("");
export function useRole(): Role {
  return useContext(RoleContext);
}

function SignIn({ onSignIn }: { onSignIn: () => void }) {
  const [value, setValue] = useState("");
  const [error, setError] = useState("");
  const submit = (e: FormEvent) => {
    e.preventDefault();
    const c = claims(value.trim());
    if (!c?.role) {
      setError("That is not a gateway access token (a JWT with a role claim).");
      return;
    }
    setToken(value);
    onSignIn();
  };
  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title">Sign in</h1>
      <p>
        Your browser already presented your client certificate to the gateway. Paste the access token
        your organisation issued to you (<code>aiml021 token issue</code> or your authorization server);
        its role decides what this console lets you do, and the gateway checks it on every call.
      </p>
      <form onSubmit={submit}>
        <label htmlFor="token">Access token</label>
        <br />
        <textarea id="token" rows={4} cols={60} value={value} onChange={(e) => setValue(e.target.value)} />
        <br />
        <button type="submit">Sign in</button>
      </form>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
    </section>
  );
}

export function App() {
  const [theme, setTheme] = useState<Theme>(
    (localStorage.getItem("aiml021.theme") as Theme | null) ?? "default",
  );
  const [signedIn, setSignedIn] = useState(getToken() !== "");
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("aiml021.theme", theme);
  }, [theme]);
  const current = signedIn ? role() : "";
  const who = signedIn ? claims() : null;

  return (
    <RoleContext.Provider value={current}>
      <a
        className="skip-link"
        href="#main"
        onClick={(e) => {
          e.preventDefault(); // the router owns the URL's hash: move focus, not the route
          document.getElementById("main")?.focus();
        }}
      >
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">aiml021 console</span>
        <span className="who">
          {who && (
            <>
              <span data-testid="identity">
                {who.sub} · <strong>{current || "no role"}</strong> · org {who.org ?? "?"}
              </span>{" "}
              <button
                type="button"
                onClick={() => {
                  setToken("");
                  setSignedIn(false);
                }}
              >
                Sign out
              </button>{" "}
            </>
          )}
          <button
            type="button"
            aria-pressed={theme === "high-contrast"}
            onClick={() => setTheme(theme === "default" ? "high-contrast" : "default")}
          >
            High contrast
          </button>
        </span>
      </header>
      <div className="layout">
        {signedIn && (
          <nav aria-label="Console sections">
            <ul>
              {PAGES.map((p) => (
                <li key={p.path}>
                  <NavLink to={p.path} end={p.path === "/"}>
                    {p.label}
                  </NavLink>
                </li>
              ))}
            </ul>
          </nav>
        )}
        <main id="main" tabIndex={-1}>
          {signedIn ? (
            <Suspense fallback={<p role="status">Loading…</p>}>
              <Routes>
                {PAGES.map((p) => (
                  <Route key={p.path} path={p.path} element={p.element} />
                ))}
              </Routes>
            </Suspense>
          ) : (
            <SignIn onSignIn={() => setSignedIn(true)} />
          )}
        </main>
      </div>
    </RoleContext.Provider>
  );
}
