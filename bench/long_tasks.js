// An init script: the main thread's tasks over 50 ms, as [start, duration] in ms since navigation.
window.longTasks = [];
new PerformanceObserver((list) => window.longTasks.push(...list.getEntries().map((task) => [task.startTime, task.duration])))
  .observe({ type: "longtask", buffered: true });
