import { useEffect, useState } from "react";
import { NavLink, Route, Routes } from "react-router-dom";
import { Overview } from "./pages/Overview";
import { Models } from "./pages/Models";
import { Policies } from "./pages/Policies";
import { Deployments } from "./pages/Deployments";
import { Monitoring } from "./pages/Monitoring";
import { Settings } from "./pages/Settings";

export const PAGES = [
  { path: "/", label: "Overview", element: <Overview /> },
  { path: "/models", label: "Models", element: <Models /> },
  { path: "/policies", label: "Policies", element: <Policies /> },
  { path: "/deployments", label: "Deployments", element: <Deployments /> },
  { path: "/monitoring", label: "Monitoring", element: <Monitoring /> },
  { path: "/settings", label: "Settings", element: <Settings /> },
] as const;

type Theme = "default" | "high-contrast";

export function App() {
  const [theme, setTheme] = useState<Theme>(
    (localStorage.getItem("aiml021.theme") as Theme | null) ?? "default",
  );
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
    localStorage.setItem("aiml021.theme", theme);
  }, [theme]);

  return (
    <>
      <a className="skip-link" href="#main">
        Skip to content
      </a>
      <header className="topbar">
        <span className="brand">aiml021 console</span>
        <button
          type="button"
          aria-pressed={theme === "high-contrast"}
          onClick={() => setTheme(theme === "default" ? "high-contrast" : "default")}
        >
          High contrast
        </button>
      </header>
      <div className="layout">
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
        <main id="main" tabIndex={-1}>
          <Routes>
            {PAGES.map((p) => (
              <Route key={p.path} path={p.path} element={p.element} />
            ))}
          </Routes>
        </main>
      </div>
    </>
  );
}
