//! ffprobe and ffmpeg: what a source is, and its HLS renditions.
//!
//! The ladder is 1080/720/480/360p, never above the source's displayed
//! height (a portrait phone video is as tall as its width after rotation);
//! a source under 360p gets one rendition at its own height. All renditions
//! come from one ffmpeg run (one decode, a `split` filter), with key frames
//! forced every segment length so every rendition cuts segments at the same
//! instants (players switch between them cleanly).
//!
//! Output names are fixed (`master.m3u8`, `<name>/index.m3u8`,
//! `<name>/seg_00000.ts`, `poster.jpg`): a retried job writes the same keys,
//! so a retry can never leave a second set of renditions behind.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendition {
    /// `720p`: the directory and the name in the master playlist.
    pub name: String,
    pub height: u32,
    pub video_kbps: u32,
}

const LADDER: [(u32, u32); 4] = [(1080, 5000), (720, 2800), (480, 1400), (360, 800)];

/// Segment length: short enough to start quickly, long enough to compress.
pub const SEGMENT_SECONDS: u32 = 4;

/// The renditions for a source of this displayed height, highest first.
pub fn ladder(source_height: u32) -> Vec<Rendition> {
    let fitting: Vec<Rendition> = LADDER
        .iter()
        .filter(|(h, _)| *h <= source_height)
        .map(|(h, kbps)| Rendition {
            name: format!("{h}p"),
            height: *h,
            video_kbps: *kbps,
        })
        .collect();
    if fitting.is_empty() {
        // Even heights only (yuv420p); 2 at the least.
        let height = (source_height & !1).max(2);
        return vec![Rendition {
            name: format!("{height}p"),
            height,
            video_kbps: 500,
        }];
    }
    fitting
}

/// What ffprobe says of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub duration: Duration,
    /// As displayed (rotation applied).
    pub width: u32,
    pub height: u32,
    pub has_audio: bool,
}

#[derive(Deserialize)]
struct ProbeJson {
    #[serde(default)]
    streams: Vec<StreamJson>,
    format: Option<FormatJson>,
}

#[derive(Deserialize)]
struct StreamJson {
    codec_type: Option<String>,
    width: Option<u32>,
    height: Option<u32>,
    duration: Option<String>,
    #[serde(default)]
    side_data_list: Vec<SideData>,
    #[serde(default)]
    tags: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct SideData {
    rotation: Option<f64>,
}

#[derive(Deserialize)]
struct FormatJson {
    duration: Option<String>,
}

/// Reads `ffprobe -print_format json -show_format -show_streams` output.
pub fn parse_probe(json: &[u8]) -> Result<Probe, String> {
    let parsed: ProbeJson =
        serde_json::from_slice(json).map_err(|e| format!("unreadable probe output: {e}"))?;
    let video = parsed
        .streams
        .iter()
        .find(|s| s.codec_type.as_deref() == Some("video"))
        .ok_or("the file has no video stream")?;
    let (mut width, mut height) = match (video.width, video.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        _ => return Err("the video stream has no size".into()),
    };
    let rotation = video
        .side_data_list
        .iter()
        .find_map(|d| d.rotation)
        .or_else(|| video.tags.get("rotate").and_then(|r| r.parse().ok()))
        .unwrap_or(0.0);
    if (rotation.abs() - 90.0).abs() < 1.0 || (rotation.abs() - 270.0).abs() < 1.0 {
        std::mem::swap(&mut width, &mut height);
    }
    let seconds = parsed
        .format
        .as_ref()
        .and_then(|f| f.duration.as_deref())
        .or(video.duration.as_deref())
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0)
        .ok_or("the file has no duration")?;
    Ok(Probe {
        duration: Duration::from_secs_f64(seconds),
        width,
        height,
        has_audio: parsed
            .streams
            .iter()
            .any(|s| s.codec_type.as_deref() == Some("audio")),
    })
}

/// ffmpeg's arguments for the HLS renditions of `input` into `out_dir`.
pub fn hls_args(
    input: &Path,
    out_dir: &Path,
    renditions: &[Rendition],
    has_audio: bool,
) -> Vec<String> {
    let n = renditions.len();
    let mut filter = format!("[0:v]split={n}");
    for i in 0..n {
        filter.push_str(&format!("[s{i}]"));
    }
    for (i, r) in renditions.iter().enumerate() {
        filter.push_str(&format!(
            ";[s{i}]scale=-2:{}:flags=bicubic,format=yuv420p[v{i}]",
            r.height
        ));
    }
    let mut args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-y",
        "-loglevel",
        "error",
        // Progress lines on stdout every second: they are read by the worker,
        // and if the worker dies the next write kills ffmpeg (SIGPIPE), so no
        // orphan transcode runs on.
        "-progress",
        "pipe:1",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(input.display().to_string());
    args.extend(["-filter_complex".into(), filter]);
    let mut stream_map = Vec::new();
    for (i, r) in renditions.iter().enumerate() {
        args.extend([
            "-map".into(),
            format!("[v{i}]"),
            format!("-c:v:{i}"),
            "libx264".into(),
            format!("-b:v:{i}"),
            format!("{}k", r.video_kbps),
            format!("-maxrate:v:{i}"),
            format!("{}k", r.video_kbps * 107 / 100),
            format!("-bufsize:v:{i}"),
            format!("{}k", r.video_kbps * 3 / 2),
        ]);
        if has_audio {
            args.extend([
                "-map".into(),
                "0:a:0".into(),
                format!("-c:a:{i}"),
                "aac".into(),
                format!("-b:a:{i}"),
                "128k".into(),
                format!("-ac:a:{i}"),
                "2".into(),
            ]);
            stream_map.push(format!("v:{i},a:{i},name:{}", r.name));
        } else {
            stream_map.push(format!("v:{i},name:{}", r.name));
        }
    }
    args.extend(
        [
            "-preset",
            "veryfast",
            "-sc_threshold",
            "0",
            "-force_key_frames",
            &format!("expr:gte(t,n_forced*{SEGMENT_SECONDS})"),
            "-f",
            "hls",
            "-hls_time",
            &SEGMENT_SECONDS.to_string(),
            "-hls_playlist_type",
            "vod",
            "-hls_flags",
            "independent_segments",
            "-hls_segment_filename",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    args.push(out_dir.join("%v/seg_%05d.ts").display().to_string());
    args.extend(["-master_pl_name".into(), "master.m3u8".into()]);
    args.extend(["-var_stream_map".into(), stream_map.join(" ")]);
    args.push(out_dir.join("%v/index.m3u8").display().to_string());
    args
}

/// ffmpeg's arguments for a poster frame (a third of the way in, at most
/// 3 s), at most 720 px high.
pub fn poster_args(input: &Path, poster: &Path, duration: Duration, height: u32) -> Vec<String> {
    let at = (duration.as_secs_f64() / 3.0).min(3.0);
    let h = height.min(720) & !1;
    vec![
        "-hide_banner".into(),
        "-nostdin".into(),
        "-y".into(),
        "-loglevel".into(),
        "error".into(),
        "-ss".into(),
        format!("{at:.3}"),
        "-i".into(),
        input.display().to_string(),
        "-frames:v".into(),
        "1".into(),
        "-vf".into(),
        format!("scale=-2:{}", h.max(2)),
        "-q:v".into(),
        "3".into(),
        poster.display().to_string(),
    ]
}

/// Runs ffprobe on a file.
pub async fn probe(ffprobe: &str, input: &Path) -> anyhow::Result<Result<Probe, String>> {
    let output = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-print_format",
            "json",
            "-show_format",
            "-show_streams",
        ])
        .arg(input)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {ffprobe}"))?;
    if !output.status.success() {
        let reason = String::from_utf8_lossy(&output.stderr);
        return Ok(Err(format!(
            "the file cannot be read as a video: {}",
            last_line(&reason)
        )));
    }
    Ok(parse_probe(&output.stdout))
}

/// Runs ffmpeg to completion. Its progress (stdout) is drained as it comes;
/// a failure reports the last lines of its stderr. The child is killed if
/// this future is dropped (a lost lease, a shutdown).
pub async fn run_ffmpeg(ffmpeg: &str, args: &[String]) -> anyhow::Result<()> {
    let mut child = Command::new(ffmpeg)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {ffmpeg}"))?;
    let stdout = child.stdout.take().context("ffmpeg stdout")?;
    let mut stderr = child.stderr.take().context("ffmpeg stderr")?;
    let progress = async {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(t) = line.strip_prefix("out_time=") {
                tracing::trace!(out_time = t, "ffmpeg progress");
            }
        }
    };
    let errors = async {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    };
    let ((), errors, status) = tokio::join!(progress, errors, child.wait());
    let status = status.context("waiting for ffmpeg")?;
    if !status.success() {
        bail!("ffmpeg failed ({status}): {}", last_line(&errors));
    }
    Ok(())
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(height: u32) -> Vec<String> {
        ladder(height).into_iter().map(|r| r.name).collect()
    }

    #[test]
    fn the_ladder_never_goes_above_the_source() {
        assert_eq!(names(2160), ["1080p", "720p", "480p", "360p"]);
        assert_eq!(names(1080), ["1080p", "720p", "480p", "360p"]);
        assert_eq!(names(1079), ["720p", "480p", "360p"]);
        assert_eq!(names(480), ["480p", "360p"]);
        assert_eq!(names(360), ["360p"]);
    }

    #[test]
    fn a_source_below_the_ladder_keeps_its_own_even_height() {
        assert_eq!(names(241), ["240p"]);
        assert_eq!(names(1), ["2p"]);
    }

    #[test]
    fn a_rotated_phone_video_counts_its_displayed_height() {
        let json = br#"{"streams":[{"codec_type":"video","width":1920,"height":1080,
            "side_data_list":[{"rotation":-90}]},{"codec_type":"audio"}],
            "format":{"duration":"12.5"}}"#;
        let probe = parse_probe(json).expect("probe");
        assert_eq!((probe.width, probe.height), (1080, 1920));
        assert!(probe.has_audio);
        assert_eq!(probe.duration, Duration::from_millis(12_500));
    }

    #[test]
    fn a_file_without_video_or_duration_is_refused_with_a_reason() {
        let audio = br#"{"streams":[{"codec_type":"audio"}],"format":{"duration":"3"}}"#;
        assert_eq!(
            parse_probe(audio),
            Err("the file has no video stream".into())
        );
        let no_duration =
            br#"{"streams":[{"codec_type":"video","width":2,"height":2}],"format":{}}"#;
        assert_eq!(
            parse_probe(no_duration),
            Err("the file has no duration".into())
        );
        assert!(parse_probe(b"not json").is_err());
    }

    #[test]
    fn every_rendition_is_mapped_and_named_in_the_master_playlist() {
        let args = hls_args(Path::new("/in.mp4"), Path::new("/out"), &ladder(720), true);
        let joined = args.join(" ");
        assert!(joined.contains("split=3[s0][s1][s2]"));
        assert!(joined.contains("v:0,a:0,name:720p v:1,a:1,name:480p v:2,a:2,name:360p"));
        assert!(joined.ends_with("/out/%v/index.m3u8"));
        let silent = hls_args(Path::new("/in.mp4"), Path::new("/out"), &ladder(360), false);
        assert!(silent.join(" ").contains("-var_stream_map v:0,name:360p"));
        assert!(!silent.contains(&"0:a:0".to_string()));
    }
}
