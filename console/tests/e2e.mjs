// Browser tests of the operator console in real headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core) against a real gateway that tests/e2e/test_console.py starts with
// mTLS and tokens. Usage: node tests/e2e.mjs CONFIG.json — writes the results next to CONFIG
// (results.json) and screenshots to config.screenshots; exits 1 when a check fails.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { chromium } from "playwright-core";
import { AxeBuilder } from "@axe-core/playwright";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const base = config.base; // https://127.0.0.1:PORT
const failures = [];
const results = { checks: [], axe: {}, routing: {}, screenshots: [] };
const PAGES = [
  ["overview", "#/", "Overview"],
  ["models", "#/models", "Models"],
  ["policies", "#/policies", "Policies"],
  ["deployments", "#/deployments", "Deployments"],
  ["monitoring", "#/monitoring", "Monitoring"],
  ["settings", "#/settings", "Settings"],
];

function check(name, ok, detail = "") {
  results.checks.push({ name, ok, detail });
  if (!ok) failures.push(`${name}: ${detail}`);
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ` (${detail})` : ""}`);
}

const browser = await chromium.launch({
  executablePath: config.chromium ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});

async function session(who, theme = "default") {
  const id = config.identities[who];
  const context = await browser.newContext({
    ignoreHTTPSErrors: true, // the gateway's certificate is signed by the test CA
    clientCertificates: [{ origin: base, certPath: id.cert, keyPath: id.key }],
    viewport: { width: 1280, height: 900 },
  });
  await context.addInitScript((t) => localStorage.setItem("aiml021.theme", t), theme);
  const page = await context.newPage();
  page.on("pageerror", (e) => failures.push(`page error (${who}): ${e.message}`));
  await page.goto(`${base}/console/`);
  await page.getByLabel("Access token").fill(id.token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
  return { context, page, token: id.token };
}

async function open(page, hash, title) {
  await page.goto(`${base}/console/${hash}`);
  await page.getByRole("heading", { level: 1, name: title }).waitFor();
}

// Keyboard only: Tab (and arrow keys inside a radio group) until the element with `id` has focus.
async function focusByKeys(page, id, maxPresses = 80) {
  for (let i = 0; i < maxPresses; i++) {
    const state = await page.evaluate((target) => {
      const a = document.activeElement;
      const t = document.getElementById(target);
      return {
        here: a?.id === target,
        sameGroup: !!(a && t && a instanceof HTMLInputElement && a.type === "radio" && a.name === t.getAttribute("name")),
      };
    }, id);
    if (state.here) return;
    await page.keyboard.press(state.sameGroup ? "ArrowDown" : "Tab");
  }
  throw new Error(`keyboard never reached #${id}`);
}

async function focusButtonByKeys(page, name, maxPresses = 80) {
  for (let i = 0; i < maxPresses; i++) {
    const text = await page.evaluate(() => {
      const a = document.activeElement;
      return a instanceof HTMLButtonElement ? a.textContent?.trim() : null;
    });
    if (text === name) return;
    await page.keyboard.press("Tab");
  }
  throw new Error(`keyboard never reached the button "${name}"`);
}

async function infer(page, token, model, n) {
  return page.evaluate(
    async ({ token, model, n }) => {
      const versions = {};
      for (let i = 0; i < n; i++) {
        const res = await fetch(`/v2/models/${model}/infer`, {
          method: "POST",
          headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
          body: JSON.stringify({ id: `console-${i}`, inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, i] }] }),
        });
        const body = await res.json();
        const v = res.ok ? body.model_version : `error ${res.status}`;
        versions[v] = (versions[v] ?? 0) + 1;
      }
      return versions;
    },
    { token, model, n },
  );
}

try {
  // --- Admin: the add-model wizard, keyboard only -------------------------------------------
  {
    const { context, page } = await session("admin");
    await open(page, "#/models", "Models");
    await page.locator("body").focus();
    await focusButtonByKeys(page, "Add a model");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: /Step 1 of 4/ }).waitFor();
    await page.locator(`#pick-${config.wizard_model}`).waitFor();
    await focusByKeys(page, `pick-${config.wizard_model}`);
    await page.keyboard.press("Space");
    await focusButtonByKeys(page, "Load and continue");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: /Step 2 of 4/ }).waitFor({ timeout: 30000 });
    const cutRadio = page.locator('input[name="wizard-cut"]').nth(1);
    const cutId = (await cutRadio.count()) ? await cutRadio.getAttribute("id") : "cut-none";
    await focusByKeys(page, cutId);
    await page.keyboard.press("Space");
    const chosenCut = cutId.replace(/^cut-/, "");
    await focusButtonByKeys(page, "Next");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: /Step 3 of 4/ }).waitFor();
    const thr = page.locator('input[id^="thr-"]').first();
    let thrId = null;
    if (await thr.count()) {
      thrId = await thr.getAttribute("id");
      await focusByKeys(page, thrId);
      await page.keyboard.press("ControlOrMeta+A");
      await page.keyboard.type("0.8");
    }
    await focusButtonByKeys(page, "Next");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: /Step 4 of 4/ }).waitFor();
    const wizardConfig = JSON.parse(await page.getByTestId("wizard-config").innerText());
    await focusButtonByKeys(page, "Finish");
    await page.keyboard.press("Enter");
    const done = await page.getByTestId("wizard-done").innerText();
    results.wizard = { config: wizardConfig, done, chosenCut, thrId };
    check("wizard (keyboard only) finishes", done.includes(config.wizard_model), done);
    check("wizard keeps the chosen cut point", wizardConfig.cut_point === (chosenCut === "none" ? null : chosenCut), JSON.stringify(wizardConfig));
    if (thrId) {
      const exitName = thrId.replace(/^thr-/, "");
      check("wizard keeps the typed threshold", wizardConfig.exit_thresholds[exitName] === 0.8, JSON.stringify(wizardConfig.exit_thresholds));
    }
    // the chosen cut point and thresholds are the served policy of the default device class
    const served = await page.evaluate(async ({ token }) => (await fetch("/v1/policies", { headers: { Authorization: `Bearer ${token}` } })).json(), { token: config.identities.admin.token });
    const cls = (served.classes ?? []).find((c) => c.device_class === "");
    results.wizard.served = cls;
    check(
      "wizard serves its cut point and thresholds to devices (policy of the default class)",
      chosenCut === "none" || (cls?.kind === "static" && cls?.params?.cut_point === chosenCut && (!thrId || cls?.thresholds?.[thrId.replace(/^thr-/, "")] === 0.8) && done.includes("policy version")),
      JSON.stringify(cls),
    );
    // the registry now lists the loaded model with its cut points
    await open(page, "#/models", "Models");
    await page.getByRole("cell", { name: config.wizard_model, exact: true }).waitFor();
    check("registry lists the added model", true);
    await context.close();
  }

  // --- Operator: 10 % canary, routing, rollback, shadow, simulation ---------------------------
  {
    const { context, page, token } = await session("operator");
    check("operator sees no add-model button", (await page.goto(`${base}/console/#/models`), await page.getByRole("heading", { level: 1, name: "Models" }).waitFor(), (await page.getByRole("button", { name: "Add a model" }).count()) === 0));
    await open(page, "#/deployments", "Deployments");
    await page.getByLabel("Model", { exact: true }).selectOption(config.canary_model);
    await page.getByLabel("Stable version").selectOption("1");
    await page.getByLabel("Candidate version").selectOption("2");
    await page.getByLabel("Custom canary share (%)").fill("10");
    await page.getByRole("button", { name: "Set canary" }).click();
    await page.getByTestId("rollout-fraction").filter({ hasText: "10.0 %" }).waitFor();
    check("canary at 10 % shown", true);
    const routed = await infer(page, token, config.canary_model, config.requests);
    results.routing.canary = routed;
    const cand = routed["2"] ?? 0;
    check("gateway routes about 10 % to the candidate", cand >= config.requests * 0.04 && cand <= config.requests * 0.2, JSON.stringify(routed));
    await page.reload();
    const counted = page.getByTestId("rollout-candidate-requests");
    await counted.filter({ hasText: `${cand} (0)` }).waitFor({ timeout: 15000 }).catch(() => {});
    const shown = await counted.innerText();
    check("deployments page shows the candidate's requests", shown.startsWith(`${cand} `), shown);
    await page.screenshot({ path: `${config.screenshots}/deployments.png`, fullPage: true });
    results.screenshots.push("deployments.png");
    await page.getByRole("button", { name: "Roll back to last known good" }).click();
    await page.getByTestId("deploy-status").filter({ hasText: "pinned to version 1" }).waitFor();
    await page.getByTestId("rollout-mode").filter({ hasText: "none" }).waitFor();
    const after = await infer(page, token, config.canary_model, 50);
    results.routing.after_rollback = after;
    check("after rollback every request is answered by the stable version", after["1"] === 50, JSON.stringify(after));
    await page.getByLabel(/Shadow the candidate/).click(); // controlled: checked once the gateway agreed
    await page.getByTestId("rollout-mode").filter({ hasText: "shadow" }).waitFor();
    const shadow = await infer(page, token, config.canary_model, 20);
    results.routing.shadow = shadow;
    check("in shadow mode the stable version still answers", shadow["1"] === 20, JSON.stringify(shadow));
    const rollout = await page.evaluate(async ({ token, model }) => (await fetch(`/v1/deploy/rollouts/${model}`, { headers: { Authorization: `Bearer ${token}` } })).json(), { token, model: config.canary_model });
    results.routing.shadow_rollout = rollout;
    check("shadow copies are compared", Number(rollout.stats?.shadowComparisons ?? 0) > 0, JSON.stringify(rollout.stats));
    await page.getByLabel(/Shadow the candidate/).click();
    await page.getByTestId("rollout-mode").filter({ hasText: "none" }).waitFor();
    check("shadow toggles off", true);
    // Rollout stages 5 -> 25 -> 50 -> 100 % and the rollback, by keyboard alone.
    await page.locator("body").focus();
    for (const stage of [5, 25, 50, 100]) {
      await focusButtonByKeys(page, `Canary ${stage} %`);
      await page.keyboard.press("Enter");
      await page.getByTestId("rollout-fraction").filter({ hasText: `${stage}.0 %` }).waitFor();
    }
    const full = await infer(page, token, config.canary_model, 10);
    check("stages 5/25/50/100 % by keyboard; at 100 % the candidate answers", full["2"] === 10, JSON.stringify(full));
    await focusButtonByKeys(page, "Roll back to last known good");
    await page.keyboard.press("Enter");
    await page.getByTestId("rollout-mode").filter({ hasText: "none" }).waitFor();
    const pinned = await infer(page, token, config.canary_model, 10);
    check("keyboard rollback pins the stable version", pinned["1"] === 10, JSON.stringify(pinned));
    // a custom share and the shadow toggle by keyboard too
    await focusByKeys(page, "dep-fraction");
    await page.keyboard.press("ControlOrMeta+A");
    await page.keyboard.type("20");
    await page.keyboard.press("Enter");
    await page.getByTestId("rollout-fraction").filter({ hasText: "20.0 %" }).waitFor();
    check("custom canary share by keyboard", true);
    await focusButtonByKeys(page, "Roll back to last known good");
    await page.keyboard.press("Enter");
    await page.getByTestId("rollout-mode").filter({ hasText: "none" }).waitFor();
    await focusByKeys(page, "dep-shadow");
    await page.keyboard.press("Space");
    await page.getByTestId("rollout-mode").filter({ hasText: "shadow" }).waitFor();
    await page.keyboard.press("Space");
    await page.getByTestId("rollout-mode").filter({ hasText: "none" }).waitFor();
    check("shadow on and off by keyboard", true);
    check("gateway health shown", (await page.getByTestId("gateway-health").innerText()).includes("ready"));

    await open(page, "#/policies", "Policies");
    await page.getByLabel("Policy", { exact: true }).selectOption("linucb");
    await page.getByLabel("Network scenario").selectOption("varying");
    await page.getByRole("button", { name: "Run simulation" }).click();
    await page.getByTestId("sim-result").waitFor({ timeout: 60000 });
    const rows = await page.locator('[data-testid="sim-result"] tbody tr').count();
    const lines = await page.locator('[data-testid="sim-result"] .recharts-line-curve').count();
    check("policy simulation shows both runs as a table and a chart", rows === 2 && lines === 2, `rows ${rows}, lines ${lines}`);
    // A device class's policy threshold, by keyboard only; the gateway pushes it to the class's devices.
    if (config.policy_class) {
      await page.locator("#pol-class").waitFor();
      await page.locator("body").focus();
      await focusByKeys(page, "pol-class");
      await page.keyboard.type(config.policy_class);
      // the kind stays what the class (here: the default class) runs; both threshold kinds show exits
      const thrInput = page.locator('input[id^="pol-thr-"]').first();
      const polThrId = await thrInput.getAttribute("id");
      await focusByKeys(page, polThrId);
      await page.keyboard.press("ControlOrMeta+A");
      await page.keyboard.type(String(config.policy_threshold));
      await focusButtonByKeys(page, "Publish to devices");
      await page.keyboard.press("Enter");
      await page.getByTestId("policy-status").filter({ hasText: `to device class ${config.policy_class}` }).waitFor();
      const exitName = polThrId.replace(/^pol-thr-/, "");
      const served = await page.evaluate(async ({ token }) => (await fetch("/v1/policies", { headers: { Authorization: `Bearer ${token}` } })).json(), { token });
      const cls = served.classes.find((c) => c.device_class === config.policy_class);
      results.policy = { exit: exitName, served: cls };
      check("policies: an operator sets a class's threshold by keyboard and the gateway serves it", cls?.thresholds?.[exitName] === config.policy_threshold, JSON.stringify(cls));
      await page.locator(`[data-testid="served-policies"] tr[data-class="${config.policy_class}"]`).waitFor();
      // An A/B experiment on that class: half its devices run LinUCB; stopped by keyboard.
      await page.locator("#exp-name").fill("console-ab");
      await page.locator("#exp-class").fill(config.policy_class);
      await page.locator("#exp-split").fill("50");
      await page.locator("#exp-kind").selectOption("linucb");
      await page.getByRole("button", { name: "Start experiment" }).click();
      await page.getByTestId("experiment-state-console-ab").filter({ hasText: "running" }).waitFor();
      const arms = await page.locator('[data-testid="experiments"] tr[data-experiment="console-ab"]').count();
      check("policies: the experiment is listed with its two arms", arms === 2, String(arms));
      // Its results come from outcomes reported for decisions of the class's devices (REST twin of
      // PolicyService.ReportOutcome): 20 phones decided and reported; the table fills within its refresh.
      const accepted = await page.evaluate(async ({ token, cls }) => {
        const headers = { "Content-Type": "application/json", Authorization: `Bearer ${token}` };
        const ids = [];
        for (let i = 0; i < 20; i++) {
          const context = { deviceId: `${cls}-${i}`, deviceClass: cls, exitIndex: 0, exitConfidences: [0.3], deadline: "0.100s", modality: "MODALITY_IMAGE", bandwidthBps: 2e7 };
          const res = await fetch("/v1/policy/decide", { method: "POST", headers, body: JSON.stringify({ context }) });
          ids.push((await res.json()).decision.decisionId);
        }
        const outcomes = ids.map((decisionId, i) => ({ decisionId, correct: i % 4 !== 0, latency: "0.030s" }));
        const res = await fetch("/v1/policy/outcomes", { method: "POST", headers, body: JSON.stringify({ outcomes }) });
        return (await res.json()).accepted;
      }, { token, cls: config.policy_class });
      const counted = await page
        .waitForFunction(() => [...document.querySelectorAll('tr[data-experiment="console-ab"] [data-testid="arm-requests"]')].reduce((n, td) => n + Number(td.textContent), 0) === 20, null, { timeout: 20000 })
        .then(() => true, () => false);
      check("policies: 20 reported outcomes fill the experiment's arms", accepted === 20 && counted, `accepted ${accepted}`);
      await page.screenshot({ path: `${config.screenshots}/policies-experiments.png`, fullPage: true });
      results.screenshots.push("policies-experiments.png");
      await page.locator("body").focus();
      await focusButtonByKeys(page, "Stop");
      await page.keyboard.press("Enter");
      await page.getByTestId("experiment-state-console-ab").filter({ hasText: "stopped" }).waitFor();
      check("policies: the experiment stops by keyboard", true);
    }
    await page.screenshot({ path: `${config.screenshots}/policies.png`, fullPage: true });
    results.screenshots.push("policies.png");
    await context.close();
  }

  // --- Observer: read-only, and the gateway refuses writes whatever the page shows -------------
  {
    const { context, page, token } = await session("observer");
    await open(page, "#/deployments", "Deployments");
    await page.getByText("Changing rollouts needs the Operator or Admin role.").waitFor();
    check("observer sees no rollout controls", (await page.getByRole("button", { name: "Set canary" }).count()) === 0);
    await open(page, "#/policies", "Policies");
    check("observer cannot run simulations", (await page.getByRole("button", { name: "Run simulation" }).count()) === 0);
    await page.getByTestId("served-policies").waitFor();
    check("observer sees served policies but no policy controls", (await page.getByRole("button", { name: "Publish to devices" }).count()) === 0 && (await page.getByRole("button", { name: "Start experiment" }).count()) === 0);
    const policyWrite = await page.evaluate(async ({ token }) => {
      const res = await fetch("/v1/policies", { method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` }, body: JSON.stringify({ kind: "heuristic" }) });
      return res.status;
    }, { token });
    check("the gateway refuses an observer's policy change", policyWrite === 403, String(policyWrite));
    const status = await page.evaluate(async ({ token, model }) => {
      const body = { rollout: { modelName: model, stableVersion: "1", candidateVersion: "2", mode: "ROLLOUT_MODE_CANARY", trafficFraction: 1 } };
      const res = await fetch("/v1/deploy/canary", { method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
      const sim = await fetch("/v1/console/simulate", { method: "POST", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` }, body: "{}" });
      return [res.status, sim.status];
    }, { token, model: config.canary_model });
    check("the gateway refuses an observer's canary and simulation", status[0] === 403 && status[1] === 403, JSON.stringify(status));
    await open(page, "#/settings", "Settings");
    await page.getByTestId("budget-current").waitFor();
    const budgetPut = await page.evaluate(async ({ token }) => (await fetch("/v1/console/budget", { method: "PUT", headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` }, body: '{"amount": 1}' })).status, { token });
    check("observer sees no budget form and the gateway refuses its budget change", (await page.getByRole("button", { name: "Save budget" }).count()) === 0 && budgetPut === 403, String(budgetPut));
    await context.close();
  }

  // --- A browser without a token sees only the sign-in form; the API refuses it ---------------
  {
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      clientCertificates: [{ origin: base, certPath: config.identities.observer.cert, keyPath: config.identities.observer.key }],
    });
    const page = await context.newPage();
    await page.goto(`${base}/console/`);
    await page.getByRole("heading", { level: 1, name: "Sign in" }).waitFor();
    const status = await page.evaluate(async () => (await fetch("/v1/console/summary")).status);
    check("no token: sign-in only, the summary is refused", status === 401 || status === 403, String(status));
    const axe = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
    results.axe["sign-in/default"] = axe.violations.map((v) => `${v.id}: ${v.nodes.length}`);
    check("axe: sign-in", axe.violations.length === 0, JSON.stringify(results.axe["sign-in/default"]));
    await page.screenshot({ path: `${config.screenshots}/sign-in.png` });
    results.screenshots.push("sign-in.png");
    await context.close();
  }

  // --- axe on every page in both themes; screenshots ------------------------------------------
  for (const theme of ["default", "high-contrast"]) {
    const { context, page } = await session("admin", theme);
    for (const [slug, hash, title] of PAGES) {
      await open(page, hash, title);
      if (slug === "models") await page.getByRole("button", { name: "Add a model" }).click();
      if (slug === "models") await page.getByRole("heading", { name: /Step 1 of 4/ }).waitFor();
      if (slug === "policies") {
        await page.getByRole("button", { name: "Run simulation" }).click();
        await page.getByTestId("sim-result").waitFor({ timeout: 60000 });
      }
      if (slug === "monitoring") await page.waitForFunction(() => document.querySelectorAll(".recharts-line-curve").length >= 5, null, { timeout: 20000 }).catch(() => {});
      if (slug === "overview") {
        await page.getByText("Requests", { exact: true }).waitFor();
        const stat = async (label) => page.locator(".stat", { hasText: label }).locator("dd").innerText();
        const shown = {
          offload: await stat("Offload rate (devices)"),
          local: await stat("Local-exit rate (devices)"),
          cache: await stat("Cache answers (devices)"),
          budget: await stat("Budget spent"),
          cost: await stat("Cost per 1,000 requests"),
        };
        results.overview = shown;
        const accuracy = await stat("Expected accuracy (devices)");
        check(`overview shows the expected accuracy of device answers (${theme})`, accuracy.startsWith("90.0 %"), accuracy);
        const heatHead = await page.locator("table.heatmap thead th").allInnerTexts();
        const heatRows = await page.locator("table.heatmap tbody tr").evaluateAll((rows) => rows.map((r) => [...r.querySelectorAll("th")].map((th) => th.textContent).join("/")));
        results.heatmap = heatRows;
        check(
          `heatmap rows are region by device class (${theme})`,
          heatHead[0] === "Region" && heatHead[1] === "Device class" && heatRows.includes("us-east/phone") && heatRows.includes("us-east/camera"),
          JSON.stringify(heatRows),
        );
        check(
          `overview shows the devices' routes and the org's spend (${theme})`,
          shown.offload === "30.0 %" && shown.local === "60.0 %" && shown.cache === "10.0 %" && /of 5\.00/.test(shown.budget) && Number(shown.cost) > 0,
          JSON.stringify(shown),
        );
      }
      await page.waitForTimeout(300);
      const axe = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
      const found = axe.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(" ")).join(", ")}`);
      results.axe[`${slug}/${theme}`] = found;
      check(`axe: ${slug} (${theme})`, axe.violations.length === 0, found.join("; "));
      if (slug !== "deployments" && slug !== "policies" || theme !== "default") {
        const file = theme === "default" ? `${slug}.png` : `${slug}-high-contrast.png`;
        if (theme === "default" || slug === "overview" || slug === "models") {
          await page.screenshot({ path: `${config.screenshots}/${file}`, fullPage: true });
          results.screenshots.push(file);
        }
      }
    }
    await context.close();
  }
  // --- Keyboard only (Admin): sign-in, skip link, navigation, the overview's deadline, the theme,
  // the models' network inputs, the budget ---------------------------------------------------------
  {
    const id = config.identities.admin;
    const context = await browser.newContext({
      ignoreHTTPSErrors: true,
      clientCertificates: [{ origin: base, certPath: id.cert, keyPath: id.key }],
      viewport: { width: 1280, height: 900 },
    });
    const page = await context.newPage();
    page.on("pageerror", (e) => failures.push(`page error (keyboard): ${e.message}`));
    const active = () => page.evaluate(() => ({ id: document.activeElement?.id ?? "", text: document.activeElement?.textContent?.trim() ?? "" }));
    await page.goto(`${base}/console/`);
    await page.getByRole("heading", { level: 1, name: "Sign in" }).waitFor();
    await focusByKeys(page, "token");
    await page.keyboard.insertText(id.token); // as a paste would
    await focusButtonByKeys(page, "Sign in");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    check("sign in by keyboard only", true);
    await page.reload(); // the token stays for the tab's session
    await page.getByRole("heading", { level: 1, name: "Overview" }).waitFor();
    await page.keyboard.press("Tab"); // the first stop of a fresh page is the skip link
    const skip = await active();
    await page.keyboard.press("Enter");
    const landed = await active();
    check("skip link by keyboard moves focus to the content, not the route", skip.text === "Skip to content" && landed.id === "main" && (await page.getByRole("heading", { level: 1, name: "Overview" }).count()) === 1, JSON.stringify([skip.text, landed.id]));
    await focusByKeys(page, "deadline");
    await page.keyboard.press("ControlOrMeta+A");
    await page.keyboard.type("250");
    await page.keyboard.press("Enter");
    const slaHint = page.locator(".stat", { hasText: "SLA attainment" }).locator(".hint");
    await slaHint.filter({ hasText: "within 200.0 ms" }).waitFor().catch(() => {});
    check("overview deadline by keyboard (the SLA bucket follows)", (await slaHint.innerText()).includes("within 200.0 ms"), await slaHint.innerText());
    await focusButtonByKeys(page, "High contrast");
    await page.keyboard.press("Space");
    const theme = await page.evaluate(() => document.documentElement.dataset.theme);
    await page.keyboard.press("Space");
    check("theme toggles by keyboard", theme === "high-contrast" && (await page.evaluate(() => document.documentElement.dataset.theme)) === "default", String(theme));
    // every page is reachable from the navigation by Tab and Enter
    let reached = 0;
    for (const [, , title] of PAGES) {
      for (let i = 0; i < 80; i++) {
        const a = await page.evaluate(() => (document.activeElement instanceof HTMLAnchorElement ? document.activeElement.textContent?.trim() : null));
        if (a === title) break;
        await page.keyboard.press("Tab");
      }
      await page.keyboard.press("Enter");
      await page.getByRole("heading", { level: 1, name: title }).waitFor();
      reached += 1;
      if (title === "Models") {
        // the transfer preview follows the RTT typed into it
        await page.locator("#preview-net-rtt").waitFor();
        const estimate = page.locator("table", { hasText: "Est. transfer" }).first().locator("tbody tr").first().locator("td").nth(4);
        const before = parseFloat(await estimate.innerText());
        await focusByKeys(page, "preview-net-rtt");
        await page.keyboard.press("ControlOrMeta+A");
        await page.keyboard.type("500");
        const after = parseFloat(await estimate.innerText());
        check("models: the transfer estimate follows an RTT typed by keyboard (40 -> 500 ms)", Math.abs(after - before - 460) < 0.2, `${before} -> ${after}`);
      }
      await page.locator("body").focus();
    }
    check("every page reached from the navigation by keyboard", reached === PAGES.length, String(reached));
    // Settings: the Admin changes their organisation's budget by keyboard alone
    await page.getByTestId("budget-current").waitFor();
    await focusByKeys(page, "budget-amount");
    await page.keyboard.press("ControlOrMeta+A");
    await page.keyboard.type("7.5");
    await page.keyboard.press("Enter");
    await page.getByTestId("budget-status").filter({ hasText: "Saved" }).waitFor();
    await page.getByTestId("budget-current").filter({ hasText: "of a budget of 7.50" }).waitFor();
    const summary = await page.evaluate(async ({ token }) => (await fetch("/v1/console/summary", { headers: { Authorization: `Bearer ${token}` } })).json(), { token: id.token });
    results.budget = summary.cost;
    check("budget saved by keyboard; the gateway's budget for the org follows", summary.cost.budget === 7.5 && summary.cost.org === "acme", JSON.stringify(summary.cost));
    const axe = await new AxeBuilder({ page }).withTags(["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]).analyze();
    results.axe["settings-saved/default"] = axe.violations.map((v) => `${v.id}: ${v.nodes.length}`);
    check("axe: settings after a save", axe.violations.length === 0, JSON.stringify(results.axe["settings-saved/default"]));
    await context.close();
  }
} catch (e) {
  failures.push(`aborted: ${e.stack ?? e}`);
  console.log(`FAIL aborted: ${e.stack ?? e}`);
} finally {
  await browser.close();
}
results.failures = failures;
writeFileSync(config.results, JSON.stringify(results, null, 2));
process.exit(failures.length ? 1 : 0);
