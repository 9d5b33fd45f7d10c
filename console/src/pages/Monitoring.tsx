export function Monitoring() {
  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title">Monitoring</h1>
    </section>
  );
}
