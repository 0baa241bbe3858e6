//! The shared echo-protocol suite, once per echo lesson. A new echo lesson joins here with
//! one line.

mod common;

echo_suite!(lesson_03, "lesson-03");
echo_suite!(lesson_04, "lesson-04");
echo_suite!(lesson_05, "lesson-05");
echo_suite!(lesson_06, "lesson-06");
echo_suite!(lesson_07, "lesson-07");
echo_suite!(lesson_08, "lesson-08");
echo_suite!(lesson_09, "lesson-09");
echo_suite!(lesson_10, "lesson-10");
echo_suite!(lesson_11, "lesson-11");
echo_suite!(lesson_15, "lesson-15");
// A ring of 4 buffers: the multishot recvs run dry (ENOBUFS) under the suite's bursts, and
// every case must still hold.
echo_suite!(lesson_15_bufs_4, "lesson-15", &["--bufs", "4"]);
