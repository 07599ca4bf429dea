// Person crops for the crop encoder, cut and resized on the GPU.
//
// ps_crop_resize_bgr_u8: for each integer box (x1, y1, x2, y2) of a uint8 BGR frame
// [H, W, 3], the pixels [y1:y2, x1:x2] resized bilinearly to [crop_h, crop_w] with
// OpenCV INTER_LINEAR's sampling (source coordinate (d + 0.5) * size / crop - 0.5,
// clamped inside the box), rounded to 8-bit levels as OpenCV's uint8 output is, and
// written as float RGB in [0, 1], [count, 3, crop_h, crop_w]. The boxes come already
// rounded outwards and clipped by the runtime (one rule for the CPU and GPU paths), so
// x1 < x2 <= W and y1 < y2 <= H. One thread per output value.

extern "C" __global__ void ps_crop_resize_bgr_u8(
    const unsigned char* __restrict__ frame, int height, int width,
    const int* __restrict__ boxes, int count, int crop_h, int crop_w,
    float* __restrict__ out) {
  const long long total = (long long)count * 3 * crop_h * crop_w;
  for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total;
       index += (long long)blockDim.x * gridDim.x) {
    const int j = (int)(index % crop_w);
    const int i = (int)((index / crop_w) % crop_h);
    const int c = (int)((index / ((long long)crop_w * crop_h)) % 3);
    const int m = (int)(index / ((long long)3 * crop_w * crop_h));
    const int x1 = boxes[4 * m], y1 = boxes[4 * m + 1];
    const int box_w = boxes[4 * m + 2] - x1, box_h = boxes[4 * m + 3] - y1;

    float fx = (j + 0.5f) * ((float)box_w / crop_w) - 0.5f;
    int sx = (int)floorf(fx);
    fx -= sx;
    if (sx < 0) { fx = 0.f; sx = 0; }
    if (sx >= box_w - 1) { fx = 0.f; sx = box_w - 1; }
    float fy = (i + 0.5f) * ((float)box_h / crop_h) - 0.5f;
    int sy = (int)floorf(fy);
    fy -= sy;
    if (sy < 0) { fy = 0.f; sy = 0; }
    if (sy >= box_h - 1) { fy = 0.f; sy = box_h - 1; }
    const int sx1 = min(sx + 1, box_w - 1), sy1 = min(sy + 1, box_h - 1);

    const int channel = 2 - c;  // BGR in, RGB out
    const unsigned char* row0 = frame + ((long long)(y1 + sy) * width + x1) * 3 + channel;
    const unsigned char* row1 = frame + ((long long)(y1 + sy1) * width + x1) * 3 + channel;
    const float top = (1.f - fx) * row0[sx * 3] + fx * row0[sx1 * 3];
    const float bottom = (1.f - fx) * row1[sx * 3] + fx * row1[sx1 * 3];
    const float value = rintf((1.f - fy) * top + fy * bottom);
    out[index] = fminf(fmaxf(value, 0.f), 255.f) / 255.f;
  }
}
