export function Overview() {
  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title">Overview</h1>
    </section>
  );
}
