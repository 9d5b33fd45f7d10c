export function Settings() {
  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title">Settings</h1>
    </section>
  );
}
