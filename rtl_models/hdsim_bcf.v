`timescale 1ns / 1ps
// hdsim_bcf -- synthesizable block code factorizer (BCF) datapath.
//
// Bit-exact RTL of hdsim.fixed.FixedBCF (SPEC sections 3 and 5,
// docs/fixed_point.md); architecture, interface, timing and the cycle lower
// bound are in docs/rtl.md.  Verilog-2005; the state arrays are flat packed
// vectors so Icarus, Verilator and yosys read them alike; the codebook ROM is
// read synchronously (block RAM).
//
// One query at a time.  Per iteration and factor f (sequential over factors):
//   ULD  : (1 cycle per correlation) load block 0 of the correlation's input
//          and of the other factor's estimate into the windows.
//   UNB  : u_f = q (/) x_g for every other factor g (ascending), requantized
//          (round half up, saturate) after each correlation.  Sparse-aware: P MAC
//          lanes compute P consecutive outputs of one block, one cycle per
//          non-zero entry of x_g's block (at least one; UJ of them with UJ > 1); a
//          4-stage pipeline (position, select operands, multiply, accumulate /
//          requantize / write; UJ > 1 adds each lane's UJ products in a fifth).
//   SIM  : a_m = min_b u[b, X[m,b]] (DOT=0) or sum_b (DOT=1), P codevectors per
//          cycle, then + IMC perturbation (saturated), running max / argmax /
//          sums: ROM read, gather, min/sum tree (perturbation requested),
//          saturating add, reductions (one stage each).
//   DEC  : sampled / pulled flags, S = sum w; starts the reciprocal divider.
//   DRAW : (sampled and A < M) draw_distinct on the query's LFSR, one k-bit
//          word per cycle, bitmask of taken indices.
//   BUND : s[b,l] += w_m for X[m,b] = l, P codevectors per cycle (ROM read,
//          codewords and weights registered, adder trees).
//   NORM : x = sat((s * R) >> (p + G - WX)), P lanes (select, multiply, shift /
//          saturate / write); R = floor(2^(p+G) / S) from a restoring divider
//          that ran during DRAW / BUND.
//   STEP : one cycle; dbg_step reports the factor step.
// The initial estimates (all weights 1) are recomputed by BUND + NORM before
// each query (INIT), overlapping the wait for the query's beats.
`include "lfsr_params.vh"

module hdsim_bcf #(
    parameter integer B         = 4,    // blocks
    parameter integer L         = 16,   // block length
    parameter integer M         = 20,   // codevectors per factor (all factors), >= 2
    parameter integer F         = 2,    // factors, >= 2
    parameter integer WQ        = 8,    // query word      Q0.WQ
    parameter integer WX        = 8,    // estimate word   Q0.WX
    parameter integer WU        = 8,    // unbinding word  Q0.WU (WU <= WQ + WX)
    parameter integer G         = 10,   // reciprocal guard bits (>= WX - 1)
    parameter integer P         = 4,    // lanes: divides L, <= M
    parameter integer MAX_ITER  = 10,
    parameter integer T_INT     = 2,    // round_half_up(T * 2^WU)
    parameter integer TC_INT    = 230,  // round_half_up(Tc * 2^WU)
    parameter integer A         = 4,    // sampling width
    parameter integer DOT       = 0,    // similarity: 0 = linf (min), 1 = dot (sum)
    parameter [31:0]  SEED      = `HDSIM_LFSR_DEFAULT_SEED,
    parameter integer QW        = 16,   // query id bits (<= 31)
    parameter integer PERTURB   = 1,    // 1: add pert_data to the similarities
    parameter integer PW        = 10,   // perturbation word (two's complement)
    parameter integer DIV_STEPS = 2,    // divider quotient bits per cycle
    parameter integer UJ        = 1,    // unbinding: nonzero estimate entries per cycle, 1..4 (UJ P multipliers)
    parameter integer DEBUG     = 1,    // 1: drive the dbg_* state port
    parameter         CB_FILE   = "codebooks.hex",
    // derived: do not override
    parameter integer IW  = $clog2(M),
    parameter integer ITW = $clog2(MAX_ITER + 1),
    parameter integer FW  = $clog2(F),
    parameter integer AB  = WU + ((DOT != 0) ? ((B > 1) ? $clog2(B) : 1) : 0),
    parameter integer SW  = AB + $clog2(M + 1),
    parameter integer RW  = G + 2
) (
    input  wire              clk,
    input  wire              rst,            // synchronous; aborts a load or a decode
    // query in: B beats, beat b = block b, entry l at s_data[l*WQ +: WQ]
    input  wire              s_valid,
    output wire              s_ready,
    input  wire [L*WQ-1:0]   s_data,
    input  wire [QW-1:0]     s_qid,          // sampled with the first beat
    // result out (held until m_ready)
    output reg               m_valid,
    input  wire              m_ready,
    output reg  [F*IW-1:0]   m_idx,          // factor f at [f*IW +: IW]
    output reg  [ITW-1:0]    m_iters,
    output reg               m_conv,
    output reg  [QW-1:0]     m_qid,
    // similarity perturbation (IMC noise at the ADC output): while pert_rd is
    // high the DUT asks for the values of codevectors pert_m .. pert_m+P-1 of
    // (pert_qid, pert_iter, pert_factor); pert_data answers on the next cycle.
    output wire              pert_rd,
    output wire [QW-1:0]     pert_qid,
    output wire [ITW-1:0]    pert_iter,
    output wire [FW-1:0]     pert_factor,
    output wire [IW-1:0]     pert_m,
    input  wire [P*PW-1:0]   pert_data,
    // debug / state port: valid in the cycle dbg_step is high (one per factor step)
    output wire              dbg_step,
    output wire [QW-1:0]     dbg_qid,
    output wire [ITW-1:0]    dbg_iter,
    output wire [FW-1:0]     dbg_factor,
    output wire              dbg_sampled,
    output wire              dbg_pulled,
    output wire              dbg_conv,       // every factor pulled up (at the last factor)
    output wire [AB-1:0]     dbg_amax,
    output wire [IW-1:0]     dbg_argmax,
    output wire [SW-1:0]     dbg_S,
    output wire [RW-1:0]     dbg_R,
    output wire [31:0]       dbg_lfsr,
    output wire [15:0]       dbg_draws,      // LFSR words of this step
    output wire [B*L*WU-1:0] dbg_u,
    output wire [M*AB-1:0]   dbg_a,
    output wire [M*AB-1:0]   dbg_w,
    output wire [B*L*WX-1:0] dbg_x,          // the new estimate of dbg_factor
    output wire [31:0]       dbg_cycle,
    output wire [31:0]       dbg_start_cycle,
    output wire [3:0]        dbg_state
);
    // ------------------------------------------------------------------ sizes
    localparam integer D    = B * L;
    localparam integer LW   = $clog2(L);                   // index in a block (L >= 2)
    localparam integer BW   = (B > 1) ? $clog2(B) : 1;
    localparam integer NCH  = (M + P - 1) / P;             // codevector chunks
    localparam integer NCP  = NCH * P;                     // padded codebook size
    localparam integer NG   = D / P;                       // output groups
    localparam integer GPB  = L / P;                       // groups per block
    localparam integer GW   = (NG > 1) ? $clog2(NG) : 1;
    localparam integer WIN  = (WQ > WU) ? WQ : WU;         // unbinding input
    localparam integer ACCW = WIN + WX;                    // correlation sum
    // the unbinding's non-zero counts (per block of x, and what is left of a group's)
    localparam integer XCW  = $clog2(L + 1);
    localparam [XCW-1:0] UJ_X  = UJ[XCW-1:0];
    localparam [XCW-1:0] UJ2_X = UJ_X + UJ_X;
    localparam integer SH1  = WQ + WX - WU;                // first requant shift (>= 0)
    localparam integer SHN  = WX;                          // later requant shifts
    localparam integer KB   = $clog2(M);                   // LFSR bits per draw
    localparam integer TK   = 1 << KB;                     // taken-mask bits (>= M)
    localparam integer PBW  = $clog2(SW + 1);              // bit length of S
    localparam integer PRW  = SW + RW;                     // s * R
    localparam integer SHW  = $clog2(SW + G + 1);          // normalize shift
    localparam integer REMW = SW + 2;                      // divider remainder (< 2 S)
    localparam integer EW   = ((AB > PW) ? AB : PW) + 2;   // a + perturbation
    localparam integer MW   = $clog2(F * NCH);             // codebook ROM address (F * NCH >= 2)
    localparam integer CBW  = P * B * LW;                  // codebook ROM word: one chunk of P codevectors

    // sized constants (integer parameters sliced: no width mismatch anywhere)
    localparam integer L0_LAST_I = L - P, B_LAST_I = B - 1, F_LAST_I = F - 1;
    localparam integer C_LAST_I = F - 2, G_LAST_I = NG - 1, S_AI = (A >= M) ? M : A;
    localparam [LW-1:0]   L0_LAST = L0_LAST_I[LW-1:0];
    localparam [LW-1:0]   P_L     = P[LW-1:0];
    localparam [BW-1:0]   B_LAST  = B_LAST_I[BW-1:0];
    localparam [FW-1:0]   F_LAST  = F_LAST_I[FW-1:0];
    localparam [FW-1:0]   C_LAST  = C_LAST_I[FW-1:0];
    localparam [GW-1:0]   G_LAST  = G_LAST_I[GW-1:0];
    localparam [IW:0]     P_CH    = P[IW:0];
    localparam [IW:0]     M_CH    = M[IW:0];
    localparam [MW-1:0]   NCH_MW  = NCH[MW-1:0];
    localparam [ITW-1:0]  IT_MAX  = MAX_ITER[ITW-1:0];
    localparam [WU-1:0]   U_MAX   = {WU{1'b1}};
    localparam [WX-1:0]   X_MAX   = {WX{1'b1}};
    localparam [AB-1:0]   A_MAX   = {AB{1'b1}};
    localparam [AB-1:0]   T_A     = T_INT[AB-1:0];
    localparam [AB-1:0]   TC_A    = TC_INT[AB-1:0];
    localparam [SW-1:0]   S_M     = M[SW-1:0];
    localparam [SW-1:0]   S_A     = S_AI[SW-1:0];
    localparam [SW-1:0]   S_ONE   = {{(SW-1){1'b0}}, 1'b1};
    localparam integer    A_LAST_I = (A > 0) ? A - 1 : 0;
    localparam [15:0]     A_LAST  = A_LAST_I[15:0];   // the draw that ends DRAW
    localparam            SAMPLE_ON  = (A > 0);
    localparam            SAMPLE_ALL = (A >= M);
    localparam            F_ODD   = (F % 2) == 1;
    localparam [31:0]     TAPS    = `HDSIM_LFSR_TAPS;
    localparam [31:0]     QMIX    = `HDSIM_LFSR_QUERY_MIX;
    localparam [ACCW:0]   ONE_ACC = {{ACCW{1'b0}}, 1'b1};
    localparam [ACCW:0]   HALF1   = (SH1 > 0) ? ONE_ACC << (SH1 - 1) : {(ACCW + 1){1'b0}};
    localparam [ACCW:0]   HALFN   = ONE_ACC << (SHN - 1);
    localparam [ACCW:0]   U_MAXE  = {{(ACCW + 1 - WU){1'b0}}, U_MAX};

    // ------------------------------------------------------------------ states
    localparam [3:0] ST_INIT = 4'd0,   // start the init pass (all weights 1)
                     ST_WAIT = 4'd1,   // initial estimates ready; wait for a query
                     ST_ULD  = 4'd2,   // load the unbinding windows (block 0)
                     ST_UNB  = 4'd3,
                     ST_SIM  = 4'd4,
                     ST_DEC  = 4'd5,
                     ST_DRAW = 4'd6,
                     ST_BUND = 4'd7,
                     ST_NORM = 4'd8,
                     ST_STEP = 4'd9,   // dbg_step; next factor / iteration
                     ST_DONE = 4'd10;  // hand the result to the output register

    reg [3:0]      state;
    reg            init_mode;          // BUND/NORM of the init pass
    reg [FW-1:0]   fcur;               // factor being updated
    reg [MW-1:0]   fbase;              // fcur * NCH (codebook ROM base)
    reg [ITW-1:0]  iter;               // 1-based iteration
    reg [QW-1:0]   qid;
    reg [31:0]     lfsr;
    reg            all_pulled;
    reg [F*IW-1:0] idx_r;              // argmax per factor, last iteration

    // ------------------------------------------------------------------ storage
    reg  [D*WQ-1:0]   qmem;            // query
    reg  [D*WU-1:0]   t0mem;           // u (the last correlation's output)
    reg  [F*D*WX-1:0] xmem;            // estimates
    reg  [NCP*AB-1:0] amem;            // similarities (padded to whole chunks)
    reg  [D*SW-1:0]   smem;            // bundle accumulators
    reg  [TK-1:0]     taken;           // sampled indices
    // codebooks, one chunk of P codevectors per word (word f*NCH+c: codevector c*P+p at
    // [p*B*LW +: B*LW], block b at [b*LW +: LW] in it; zero past M); read synchronously, one
    // word per cycle, so synthesis maps it to block RAM (DP16KD on ECP5)
    (* ram_style = "block" *) reg [CBW-1:0] cbrom [0:F*NCH-1];
    initial $readmemh(CB_FILE, cbrom);

    // ------------------------------------------------------------------ query loader
    reg          q_full;
    reg [BW-1:0] ld_blk;
    reg [QW-1:0] ld_qid;
    wire         ld_fire = s_valid && !q_full;
    wire         res_take = (state == ST_DONE) && (!m_valid || m_ready);
    assign s_ready = !q_full;
    always @(posedge clk) begin
        if (rst) begin
            q_full <= 1'b0;
            ld_blk <= {BW{1'b0}};
        end else begin
            if (ld_fire) begin
                ld_blk <= (ld_blk == B_LAST) ? {BW{1'b0}} : ld_blk + 1'b1;
                if (ld_blk == B_LAST) q_full <= 1'b1;
            end
            if (res_take) q_full <= 1'b0;
        end
    end
    // one write enable per block over constant offsets: no index arithmetic (L * WQ is
    // rarely a power of two, and yosys maps such strides to multipliers)
    integer lb;
    always @(posedge clk) begin
        for (lb = 0; lb < B; lb = lb + 1)
            if (ld_fire && ld_blk == lb[BW-1:0]) qmem[lb*L*WQ +: L*WQ] <= s_data;
        if (ld_fire && ld_blk == 0) ld_qid <= s_qid;
    end

    // ------------------------------------------------------------------ divider
    // R = floor(2^(p+G) / S) = floor(2^(p-1) 2^RW / (2 S)): restoring division of the
    // numerator 2^(p-1) 2^RW (its leading part 2^(p-1) = S's highest set bit, < 2 S) by
    // 2 S, DIV_STEPS quotient bits per cycle.  Starting from S's highest bit needs no
    // shift by the bit length p (a priority encoder, a subtraction and a barrel shifter in
    // the cycle that chooses S); p itself is registered one cycle later.  The divider runs
    // NDIV whole cycles, RQW = NDIV * DIV_STEPS >= RW quotient bits, so no step is gated by
    // a bit count (the chained steps are compare-and-subtract alone): the extra low bits
    // are the quotient of the numerator times 2^(RQW - RW), and floor(floor(N 2^e / d) / 2^e)
    // = floor(N / d), so R is the quotient's top RW bits.
    localparam integer NDIV = (RW + DIV_STEPS - 1) / DIV_STEPS;
    localparam integer RQW  = NDIV * DIV_STEPS;
    localparam integer DCW  = $clog2(NDIV + 1);
    localparam [DCW-1:0] NDIV_D = NDIV[DCW-1:0];
    reg              div_go;           // from the FSM (combinational)
    reg  [SW-1:0]    div_S;
    reg              div_busy;
    reg  [SW-1:0]    div_den;          // S
    reg  [REMW-1:0]  div_rem;
    reg  [RQW-1:0]   div_q;
    reg  [DCW-1:0]   div_left;         // cycles left
    reg  [PBW-1:0]   cur_p;            // bit length of S (one cycle after cur_S)
    reg  [SW-1:0]    cur_S;

    function [PBW-1:0] bitlen;
        input [SW-1:0] v;
        integer i;
        begin
            bitlen = {PBW{1'b0}};
            for (i = 0; i < SW; i = i + 1)
                if (v[i]) bitlen = i[PBW-1:0] + 1'b1;
        end
    endfunction

    function [SW-1:0] msb_of;          // the highest set bit of v alone (0 for v = 0)
        input [SW-1:0] v;
        integer i;
        reg seen;
        begin
            seen = 1'b0;
            for (i = SW - 1; i >= 0; i = i - 1) begin
                msb_of[i] = v[i] && !seen;
                seen = seen || v[i];
            end
        end
    endfunction

    // One cycle's DIV_STEPS quotient bits.  DIV_STEPS = 2 is radix 4: the partial remainder
    // times 4 compared with d, 2 d and 3 d (d = 2 S; 3 d registered at the start) in
    // parallel, then one 4-way select: a single compare in the cycle, where two chained
    // restoring steps put a compare, a select, a compare and a select in series.
    reg [REMW-1:0]  dv_rem;
    reg [RQW-1:0]   dv_q;
    reg [REMW+1:0]  div_d3;            // 3 d = 6 S (used by DIV_STEPS = 2)
    reg [REMW+1:0]  dv_r4, dv_d1, dv_d2;
    reg             dv_ge1, dv_ge2, dv_ge3;
    integer di;
    always @* begin
        dv_rem = div_rem;
        dv_q = div_q;
        dv_r4 = {div_rem, 2'b00};
        dv_d1 = {3'b000, div_den, 1'b0};
        dv_d2 = {2'b00, div_den, 2'b00};
        dv_ge1 = (dv_r4 >= dv_d1);
        dv_ge2 = (dv_r4 >= dv_d2);
        dv_ge3 = (dv_r4 >= div_d3);
        if (DIV_STEPS == 2) begin
            dv_rem = dv_ge3 ? dv_r4[REMW-1:0] - div_d3[REMW-1:0] :
                     dv_ge2 ? dv_r4[REMW-1:0] - dv_d2[REMW-1:0] :
                     dv_ge1 ? dv_r4[REMW-1:0] - dv_d1[REMW-1:0] : dv_r4[REMW-1:0];
            dv_q = {div_q[RQW-3:0], dv_ge2, dv_ge3 || (dv_ge1 && !dv_ge2)};
        end else begin
            for (di = 0; di < DIV_STEPS; di = di + 1) begin
                dv_rem = dv_rem << 1;
                if (dv_rem >= {1'b0, div_den, 1'b0}) begin
                    dv_rem = dv_rem - {1'b0, div_den, 1'b0};
                    dv_q = {dv_q[RQW-2:0], 1'b1};
                end else begin
                    dv_q = {dv_q[RQW-2:0], 1'b0};
                end
            end
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            div_busy <= 1'b0;
        end else if (div_go) begin
            cur_S    <= div_S;
            div_den  <= div_S;
            div_d3   <= {2'b00, div_S, 2'b00} + {3'b000, div_S, 1'b0};
            div_rem  <= {2'b00, msb_of(div_S)};
            div_q    <= {RQW{1'b0}};
            div_left <= NDIV_D;
            div_busy <= (div_S != 0);
        end else if (div_busy) begin
            div_rem  <= dv_rem;
            div_q    <= dv_q;
            div_left <= div_left - 1'b1;
            if (div_left == 1) div_busy <= 1'b0;
        end
    end
    wire unused_div_q = ^div_q;        // below RQW - RW: the extra quotient bits
    // p is needed only in NORM, at least three cycles after any div_go
    always @(posedge clk) cur_p <= bitlen(cur_S);
    // R: its own register, written with the quotient's last bits (and cleared at the start:
    // S = 0 gives R = 0, the divider does not run), so N2's multipliers take it straight from
    // flip-flops that drive nothing else
    reg  [RW-1:0] cur_R;
    always @(posedge clk) begin
        if (div_go) cur_R <= {RW{1'b0}};
        else if (div_busy && div_left == 1) cur_R <= dv_q[RQW-1 -: RW];
    end

    // ------------------------------------------------------------------ coding note
    // Lane and cell logic is written as loops in single always blocks (functions
    // for the per-lane arithmetic), not as generate blocks that each drive a slice
    // of a shared net: Icarus resolves such multi-driver nets bit by bit on every
    // partial update, which made the simulation 10-100x slower at P = 16.

    // ------------------------------------------------------------------ unbinding
    // Correlation c (0 .. F-2) unbinds factor g = c < f ? c : c+1 from t_in
    // (q for c = 0); it writes buffer (F-2-c) mod 2, so the last one lands in
    // t0mem.  Sparse-aware: x_g is a normalized bundle of g's active codevectors,
    // zero at most positions, and a zero x_g[j] adds nothing to any output, so a
    // group of P outputs l0..l0+P-1 visits only the block's nonzero j (ascending,
    // one per cycle; one cycle with x = 0 for an all-zero block): lane p reads
    // t_in[(l0 + j + p) mod L], all lanes read x_g[j].  The sums are exact
    // integers, so skipping zeros and their order change nothing (bit-exact).
    // Timing: no select computes an address.  The window sources are picked by a
    // registered one-hot block select (wsel) and a compare of the factor with constants;
    // twin holds the block rotated by l0 (rotated by the constant P at each group), so
    // lane p reads entry (j + p) mod L of a fixed rotation of it, selected by j's one-hot
    // (UJ = 1: the lowest set bit of urem, the positions left, a carry chain); the outputs
    // are written by per-group enables.  With UJ > 1 a cycle takes the UJ lowest remaining
    // positions, found by their ranks among the block's non-zeros (g_pair; UJ P multipliers,
    // the operands of a position past the last are 0) and each lane's UJ products are added
    // in a stage of their own.  Whether a group ends this cycle (at most UJ positions left)
    // is a register (ulast), kept from xcnt (per block of x: its nonzero count, kept by
    // NORM) at a block load, from nzw_le at a group restart and otherwise from ucnt, a
    // down-counter of the positions left (a compare of a few bits, not a popcount), so the
    // window loads' enables start at flip-flops.
    localparam integer ACC1 = ACCW + 1;          // accumulator: rounding half + sum
    reg [FW-1:0]      uc;
    reg [BW-1:0]      ublk;
    reg [LW-1:0]      ul0;
    reg [GW-1:0]      ugrp;
    reg [L*WIN-1:0]   twin;                      // block of t_in rotated by l0: entry i = t_in[(l0 + i) mod L]
    reg [L*WX-1:0]    xwin;                      // block of x_g
    reg [L-1:0]       nzw;                       // x_g's nonzero positions in the block
    reg               ulast;                     // at most UJ positions left: the group's last cycle
    reg               nzw_le;                    // popcount(nzw) <= UJ
    reg  [XCW-1:0]    nzcnt;                     // popcount(nzw)
    reg  [XCW-1:0]    ucnt;                      // positions left in this group
    reg [B-1:0]       wsel;                      // one-hot: the block the windows load next
    reg [B-1:0]       wsel_w;                    // wsel a cycle later: twin / xwin's source
    reg [P*ACC1-1:0]  acc;                       // one accumulator per lane
    wire [D*WU-1:0]   t1q;                       // t1mem (F >= 3) or 0
    reg  [F*D-1:0]    xnz;                       // xmem word != 0 (written with xmem by NORM)
    reg  [F*B*XCW-1:0] xcnt;                     // per block of xmem: nonzero words
    wire [F*D*LW-1:0] xrk;                       // UJ > 1: each xmem word's rank among its block's
                                                 // nonzero words (g_rank; 0 if UJ = 1)
    localparam integer WSEL0_I = 1, WSEL1_I = (B > 1) ? 2 : 0;
    localparam [B-1:0] WSEL0 = WSEL0_I[B-1:0];   // block 0 (ULD)
    localparam [B-1:0] WSEL1 = WSEL1_I[B-1:0];   // block 1 (the first block change)

    // uj_hot = the lowest remaining position, one-hot (0 when none); with UJ > 1, g_pair
    // takes the next UJ - 1 lowest too (U1's other positions)
    wire [L-1:0] uj_hot;
    wire         urem_nx_le = (ucnt <= UJ2_X);   // after this cycle at most UJ positions are left

    // the correlation's source and target, and the factor it unbinds, as registers set with
    // uc and fcur (the window sources fan them out to every window bit)
    reg         u_first;                     // uc == 0: t_in is the query
    reg         u_out1;                      // F_ODD ^ uc[0]: (F-2-c) odd, write t1mem
    reg [F-1:0] ugh;                         // one-hot: g = uc < fcur ? uc : uc + 1
    function [F-1:0] ug_hot;
        input [FW-1:0] c;
        input [FW-1:0] f;
        reg   [FW-1:0] g;
        begin
            g = (c < f) ? c : c + 1'b1;
            ug_hot = {{(F - 1){1'b0}}, 1'b1} << g;
        end
    endfunction
    wire        u_last_j    = ulast;
    wire        u_last_l0   = (ul0 == L0_LAST);
    wire        u_last_blk  = (ublk == B_LAST);
    wire        u_last_corr = (uc == C_LAST);
    wire        u_we        = (state == ST_UNB) && u_last_j;
    reg         u_blkend;                    // ul0 == L0_LAST && ublk != B_LAST (set with them)
    localparam  BLKEND0 = (L0_LAST_I == 0) && (B > 1);   // u_blkend at l0 = 0 of block 0
    wire        u_nextblk   = u_we && u_blkend;

    // window sources (wsel: block 0 in ULD, block ublk+1 in UNB), of t_in and of x_g
    // U0's sources (nzw, ulast, the counts) by wsel; U1's (twin, xwin), loaded a cycle later, by
    // wsel_w, wsel's copy a cycle later
    reg  [L*WIN-1:0] src_w;
    reg  [L*WX-1:0]  src_x;
    reg  [L-1:0]     src_nz;
    reg              src_le;
    reg  [XCW-1:0]   src_cnt;
    reg              sel_b, sel_bw, sel_x, sel_xw;
    integer sb, sg, si;
    always @* begin
        src_w = {L*WIN{1'b0}};
        src_x = {L*WX{1'b0}};
        src_nz = {L{1'b0}};
        src_le = 1'b0;
        src_cnt = {XCW{1'b0}};
        for (sb = 0; sb < B; sb = sb + 1) begin
            sel_b = wsel[sb];
            sel_bw = wsel_w[sb];
            for (si = 0; si < L; si = si + 1)
                src_w[si*WIN +: WIN] = src_w[si*WIN +: WIN] | ({WIN{sel_bw}} &
                    (u_first ? {{(WIN - WQ){1'b0}}, qmem[(sb*L + si)*WQ +: WQ]}
                             : {{(WIN - WU){1'b0}}, u_out1 ? t0mem[(sb*L + si)*WU +: WU]
                                                           : t1q[(sb*L + si)*WU +: WU]}));
            for (sg = 0; sg < F; sg = sg + 1) begin
                sel_x = sel_b && ugh[sg];
                sel_xw = sel_bw && ugh[sg];
                src_x = src_x | ({L*WX{sel_xw}} & xmem[(sg*B + sb)*L*WX +: L*WX]);
                src_nz = src_nz | ({L{sel_x}} & xnz[(sg*B + sb)*L +: L]);
                // popcount <= UJ, and the count itself for ucnt (exact: 2 UJ <= L fits XCW bits)
                src_le = src_le | (sel_x && (xcnt[(sg*B + sb)*XCW +: XCW] <= UJ_X));
                src_cnt = src_cnt | ({XCW{sel_x}} & xcnt[(sg*B + sb)*XCW +: XCW]);
            end
        end
    end

    // twin rotated by the constant P: the next group's view
    function [L*WIN-1:0] rot_p;
        input [L*WIN-1:0] w;
        integer i;
        for (i = 0; i < L; i = i + 1)
            rot_p[i*WIN +: WIN] = w[((i + P) % L)*WIN +: WIN];
    endfunction
    // U0 (state UNB) walks the positions (its state, ulast, nzw load at ULD and at a block
    // change); U1 (the next cycle) selects the operands from twin / xwin, which load and
    // rotate a cycle later than U0's decisions, from registered enables (w_ld_*, u1_rot:
    // one per window, so no wide enable is decoded in the cycle that uses it)
    // Duplicated registers (each in a "keep" process, so synthesis does not merge them):
    // ulast_u, ulast's copy for U0's own loop (the positions, ulast), apart from ulast's wide
    // fanout (the counters, the FSM, the windows' enables); w_ld_t / w_ld_x, one enable per
    // window.
    reg            ulast_u;
    reg            w_ld_t;               // load twin at the end of this cycle
    reg            w_ld_x;               // load xwin
    reg            u1_rot;               // U1 holds a group's last position: rotate twin after it
    wire           u0_ld = (state == ST_ULD) || (state == ST_UNB && ulast_u && u_blkend);   // = ULD || u_nextblk
    wire           u0_last_n = u0_ld ? src_le : (state == ST_UNB) ? (ulast_u ? nzw_le : urem_nx_le) : ulast_u;
    (* keep *) always @(posedge clk) ulast <= u0_last_n;
    (* keep *) always @(posedge clk) ulast_u <= u0_last_n;
    (* keep *) always @(posedge clk) w_ld_t <= u0_ld;
    (* keep *) always @(posedge clk) w_ld_x <= u0_ld;
    always @(posedge clk) begin
        if (u0_ld) begin
            nzw  <= src_nz;
            nzw_le <= src_le;
            nzcnt <= src_cnt;
            ucnt <= src_cnt;
        end else if (state == ST_UNB)
            ucnt <= ulast_u ? nzcnt : ucnt - UJ_X;
        u1_rot <= u_we;
        if (w_ld_t) twin <= src_w;
        else if (u1_rot) twin <= rot_p(twin);
        if (w_ld_x) xwin <= src_x;
        // the next block: 0 until ULD ends, then 1, 2, ... at each block change
        if (state == ST_ULD) wsel <= uld_wait ? WSEL0 : WSEL1;
        else if (state == ST_UNB) begin
            if (u_nextblk) wsel <= wsel << 1;
            else if (u_we && u_last_l0) wsel <= WSEL0;   // the correlation's last group: ULD next
        end else wsel <= WSEL0;
        wsel_w <= wsel;
    end

    // U1: the lanes' operands twin[(j + p) mod L] and x_g[j], selected by j's one-hot
    // (u1_j: U0's lowest remaining position, registered; AND-OR, no index arithmetic)
    reg  [L-1:0]     u1_j;
    reg  [P*WIN-1:0] ut;
    reg  [WX-1:0]    ux;
    reg              sel_j;
    integer tp, ti;
    always @* begin
        ut = {P*WIN{1'b0}};
        ux = {WX{1'b0}};
        for (ti = 0; ti < L; ti = ti + 1) begin
            sel_j = u1_j[ti];
            for (tp = 0; tp < P; tp = tp + 1)
                ut[tp*WIN +: WIN] = ut[tp*WIN +: WIN] | ({WIN{sel_j}} & twin[((ti + tp) % L)*WIN +: WIN]);
            ux = ux | ({WX{sel_j}} & xwin[ti*WX +: WX]);
        end
    end

    // lane p: t * x (exact); at a group's end the requantized output of the accumulator,
    // which starts each group at the rounding half (so the last cycle adds no constant)
    function [ACCW-1:0] mul_tx;
        input [WIN-1:0]  t;
        input [WX-1:0]   x;
        mul_tx = {{WX{1'b0}}, t} * {{WIN{1'b0}}, x};
    endfunction
    function [WU-1:0] requant;   // shift by SH1 (first) or SHN bits (the half is in v), saturate to WU
        input [ACCW:0]   v;
        input            first;
        reg   [ACCW:0]   r;
        begin
            r = first ? (v >> SH1) : (v >> SHN);
            requant = (r > U_MAXE) ? U_MAX : r[WU-1:0];
        end
    endfunction
    // Four stages, so fmax is not set by select + multiply + add + requantize in one
    // cycle: U0 (the control above) picks the position, U1 selects the operands, U2
    // multiplies, U3 accumulates and, at a group's last position, writes the requantized
    // outputs.
    reg              u1_v, u1_last, u1_first, u1_out1;
    reg              u2_v, u2_last, u2_first, u2_out1, u3_v, u3_last, u3_first, u3_out1;
    reg [GW-1:0]     u1_grp, u2_grp, u3_grp;
    reg [P*WIN-1:0]  u2_t;
    reg [WX-1:0]     u2_x;
    reg [P*ACC1-1:0] u3_prod;                    // U3's addend: the product (UJ = 1) or the pair's sum
    wire             up_first;                   // the entry before U3: its correlation's first flag
    wire             ub_busy;                    // UJ > 1: the sum stage holds an entry
    reg [P*WU-1:0]   uq;                         // U3's requantized outputs
    integer up, ugi;
    always @* begin
        for (up = 0; up < P; up = up + 1)
            uq[up*WU +: WU] = requant(acc[up*ACC1 +: ACC1] + u3_prod[up*ACC1 +: ACC1], u3_first);
    end
    always @(posedge clk) begin
        u1_v <= !rst && (state == ST_UNB);
        u2_v <= !rst && u1_v;
        u1_j <= uj_hot;
        {u1_last, u1_first, u1_out1, u1_grp} <= {u_last_j, u_first, u_out1, ugrp};
        {u2_last, u2_first, u2_out1, u2_grp} <= {u1_last, u1_first, u1_out1, u1_grp};
        u2_t <= ut;
        u2_x <= ux;
        // after a group's last entry (or idle) the accumulator restarts at the half of the
        // correlation whose entry is in U2 now (a group's first entry reaches U3 next)
        for (up = 0; up < P; up = up + 1)
            acc[up*ACC1 +: ACC1] <= (u3_v && !u3_last) ? acc[up*ACC1 +: ACC1] + u3_prod[up*ACC1 +: ACC1]
                                                       : (up_first ? HALF1 : HALFN);
        if (u3_v && u3_last && !u3_out1)
            for (ugi = 0; ugi < NG; ugi = ugi + 1)
                if (u3_grp == ugi[GW-1:0]) t0mem[ugi*P*WU +: P*WU] <= uq;
    end
    // U2 multiplies; UJ = 1: U3 takes the products; UJ > 1: the other positions' operands
    // (selected in U1 like the first's) are multiplied beside them and stage UB adds each
    // lane's UJ products (partial sums of a group's non-negative terms: they fit the
    // accumulator as the group's sum does)
    generate
        if (UJ > 1) begin : g_pair
            localparam integer UX = UJ - 1;          // positions beside the first
            localparam integer RKW = LW + 1;         // a rank or a slot's target rank (up to L - 1 + UJ)
            localparam [RKW-1:0] UJ_R = UJ[RKW-1:0];
            reg  [UX*L-1:0]     jx_n;                // the 2nd .. UJ-th positions of this cycle, one-hot each
            reg  [UX*L-1:0]     u1_jx;               // U1's other positions (jx_n registered)
            reg  [UX*P*WIN-1:0] utx, u2_tx;
            reg  [UX*WX-1:0]    uxx, u2_xx;
            reg  [UJ*P*ACCW-1:0] ub_p;               // each lane's UJ products
            reg  [P*ACC1-1:0]   ub_sum;              // their sums
            reg                 ub_v, ub_last, ub_first, ub_out1;
            reg  [GW-1:0]       ub_grp;
            reg                 sel_jx;
            integer tp2, ti2, ub, kx, kr, ks, rb, rg;
            // Positions by rank: a group's cycle k takes the non-zero positions of ranks
            // k UJ .. k UJ + UJ - 1 among the block's non-zeros (the UJ lowest of those left).
            // NORM keeps each word's rank (xrk), the window loads its block's ranks (urk)
            // with nzw, and ubk[k] counts slot k's target rank k, k + UJ, ... so a position
            // is an equality of a few flip-flops, with no count over the window in the loop.
            // (Prefix counts of the positions left, min(UJ, popcount), routed at 91.6 MHz at
            // f2-l16-m16-p4, UJ = 4; UJ chained lowest-bit clears at 77 MHz.)
            reg  [L*LW-1:0]     src_rk;              // the ranks of the window's next block
            reg  [L*LW-1:0]     urk;                 // the ranks of nzw's block
            reg  [UJ*RKW-1:0]   ubk;                 // slot k's target rank
            reg  [L-1:0]        uj0;
            always @* begin
                src_rk = {L*LW{1'b0}};
                for (rb = 0; rb < B; rb = rb + 1)
                    for (rg = 0; rg < F; rg = rg + 1)
                        src_rk = src_rk | ({L*LW{wsel[rb] && ugh[rg]}} & xrk[(rg*B + rb)*L*LW +: L*LW]);
            end
            always @* begin
                for (kr = 0; kr < L; kr = kr + 1) begin
                    uj0[kr] = nzw[kr] && ({1'b0, urk[kr*LW +: LW]} == ubk[0 +: RKW]);
                    for (kx = 1; kx < UJ; kx = kx + 1)
                        jx_n[(kx-1)*L + kr] = nzw[kr] && ({1'b0, urk[kr*LW +: LW]} == ubk[kx*RKW +: RKW]);
                end
            end
            assign uj_hot = uj0;
            always @(posedge clk) begin
                if (u0_ld) urk <= src_rk;
                for (kx = 0; kx < UJ; kx = kx + 1)
                    if (u0_ld || (state == ST_UNB && ulast_u)) ubk[kx*RKW +: RKW] <= kx[RKW-1:0];
                    else if (state == ST_UNB) ubk[kx*RKW +: RKW] <= ubk[kx*RKW +: RKW] + UJ_R;
            end
            always @* begin
                utx = {UX*P*WIN{1'b0}};
                uxx = {UX*WX{1'b0}};
                for (kx = 0; kx < UX; kx = kx + 1)
                    for (ti2 = 0; ti2 < L; ti2 = ti2 + 1) begin
                        sel_jx = u1_jx[kx*L + ti2];
                        for (tp2 = 0; tp2 < P; tp2 = tp2 + 1)
                            utx[(kx*P + tp2)*WIN +: WIN] = utx[(kx*P + tp2)*WIN +: WIN]
                                | ({WIN{sel_jx}} & twin[((ti2 + tp2) % L)*WIN +: WIN]);
                        uxx[kx*WX +: WX] = uxx[kx*WX +: WX] | ({WX{sel_jx}} & xwin[ti2*WX +: WX]);
                    end
            end
            always @* begin
                ub_sum = {P*ACC1{1'b0}};
                for (ks = 0; ks < P * UJ; ks = ks + 1)
                    ub_sum[(ks % P)*ACC1 +: ACC1] = ub_sum[(ks % P)*ACC1 +: ACC1] + {1'b0, ub_p[ks*ACCW +: ACCW]};
            end
            assign up_first = ub_first;
            assign ub_busy = ub_v;
            always @(posedge clk) begin
                u1_jx <= jx_n;
                u2_tx <= utx;
                u2_xx <= uxx;
                for (ub = 0; ub < P; ub = ub + 1) begin
                    ub_p[ub*ACCW +: ACCW] <= mul_tx(u2_t[ub*WIN +: WIN], u2_x);
                    for (kx = 0; kx < UX; kx = kx + 1)
                        ub_p[((kx+1)*P + ub)*ACCW +: ACCW] <= mul_tx(u2_tx[(kx*P + ub)*WIN +: WIN], u2_xx[kx*WX +: WX]);
                    u3_prod[ub*ACC1 +: ACC1] <= ub_sum[ub*ACC1 +: ACC1];
                end
                ub_v <= !rst && u2_v;
                u3_v <= !rst && ub_v;
                {ub_last, ub_first, ub_out1, ub_grp} <= {u2_last, u2_first, u2_out1, u2_grp};
                {u3_last, u3_first, u3_out1, u3_grp} <= {ub_last, ub_first, ub_out1, ub_grp};
            end
        end else begin : g_single
            integer ub;
            reg  [L-1:0] urem;                   // the group's positions left (the lowest first)
            wire [L-1:0] urem_nx = urem & (urem - 1'b1);
            wire unused_xrk = ^xrk;              // ranks are kept for UJ > 1 only
            assign uj_hot = urem & (~urem + 1'b1);
            always @(posedge clk) begin
                if (u0_ld) urem <= src_nz;
                else if (state == ST_UNB) urem <= ulast_u ? nzw : urem_nx;
            end
            assign up_first = u2_first;
            assign ub_busy = 1'b0;
            always @(posedge clk) begin
                for (ub = 0; ub < P; ub = ub + 1)
                    u3_prod[ub*ACC1 +: ACC1] <= {1'b0, mul_tx(u2_t[ub*WIN +: WIN], u2_x)};
                u3_v <= !rst && u2_v;
                {u3_last, u3_first, u3_out1, u3_grp} <= {u2_last, u2_first, u2_out1, u2_grp};
            end
        end
    endgenerate
    // ULD waits while a write to t0mem / t1mem could land after U1's window load (the cycle
    // after ULD's last): the last entry in U1, U2 or UB (in U3 it writes at the end of this
    // cycle)
    wire uld_wait = u1_v || u2_v || ub_busy;
    generate
        if (F >= 3) begin : g_t1
            reg [D*WU-1:0] t1mem;
            integer ugi1;
            always @(posedge clk) begin
                if (u3_v && u3_last && u3_out1)
                    for (ugi1 = 0; ugi1 < NG; ugi1 = ugi1 + 1)
                        if (u3_grp == ugi1[GW-1:0]) t1mem[ugi1*P*WU +: P*WU] <= uq;
            end
            assign t1q = t1mem;
        end else begin : g_not1
            assign t1q = {D*WU{1'b0}};
        end
    endgenerate

    // ------------------------------------------------------------------ codebook lanes
    // SIM and BUND issue chunk chk (codevectors chm = chk * P ..) to the ROM; its word
    // arrives in cw one cycle later, with c1_v / c1_chm: lane p is codevector c1_chm + p.
    reg  [IW:0]       chm;
    reg  [MW-1:0]     chk;
    reg  [CBW-1:0]    cw;              // the ROM word of chunk c1_chm
    reg               c1_v;            // cw holds an issued chunk
    reg  [IW:0]       c1_chm;
    reg  [P-1:0]      lane_ok;         // codevector c1_chm + p < M (registered with the read)
    reg  [IW:0]       cb_m;
    wire              cb_issue = sim_issue || (state == ST_BUND && chm < M_CH);
    reg  [P-1:0]      lane_ok_n;       // the same for the chunk issued now
    integer cp;
    always @* begin
        for (cp = 0; cp < P; cp = cp + 1) begin
            cb_m = chm + cp[IW:0];
            lane_ok_n[cp] = (cb_m < M_CH);
        end
    end
    always @(posedge clk) begin
        cw <= cbrom[fbase + chk];
        c1_chm <= chm;
        lane_ok <= lane_ok_n;
    end

    // ------------------------------------------------------------------ similarity
    reg            s2_v;               // stage 2 holds a chunk
    reg [IW:0]     s2_chm;
    reg [P-1:0]    s2_ok;
    reg [P*AB-1:0] s2_raw;
    reg [AB-1:0]   amax;
    reg [IW-1:0]   argmax;
    reg [SW-1:0]   sum_all;
    reg [SW-1:0]   sum_kept;
    reg            any_kept;
    wire           sim_more  = (state == ST_SIM) && (chm < M_CH);
    // the gather (two cycles later) reads the final t0mem: the last entry at most in the
    // stage before U3
    wire           sim_issue = sim_more && !u1_v && !(UJ > 1 && u2_v);
    wire           sim_s1 = (state == ST_SIM) && c1_v;    // stage 1: the chunk's ROM word is in cw

    assign pert_rd     = (PERTURB != 0) && g_v;
    assign pert_qid    = qid;
    assign pert_iter   = iter;
    assign pert_factor = fcur;
    assign pert_m      = g_chm[IW-1:0];

    // stage 1: the chunk's ROM word is registered once more (block RAM clock-to-output is
    // slow); stage 2 gathers the B entries u[b, X[m,b]] of each lane; stage G: min (linf)
    // or sum (dot) over the blocks as a balanced tree (both exact and associative); the
    // perturbation is requested there and answers in the next stage
    reg            c2_v, g_v;
    reg [IW:0]     c2_chm, g_chm;
    reg [P-1:0]    c2_ok, g_ok;
    reg [CBW-1:0]  cw2;
    reg [P*B*WU-1:0] g_u;
    // entry e of one block of u, by comparing e with constants (no index arithmetic)
    function [WU-1:0] pick_u;
        input [L*WU-1:0] blk;
        input [LW-1:0]   e;
        integer i;
        begin
            pick_u = {WU{1'b0}};
            for (i = 0; i < L; i = i + 1)
                pick_u = pick_u | ({WU{e == i[LW-1:0]}} & blk[i*WU +: WU]);
        end
    endfunction
    integer gp, gb;
    always @(posedge clk) begin
        c2_v <= !rst && sim_s1;
        c2_chm <= c1_chm;
        c2_ok <= lane_ok;
        cw2 <= cw;
        g_v <= !rst && c2_v;
        g_chm <= c2_chm;
        g_ok <= c2_ok;
        if (c2_v)
            for (gp = 0; gp < P; gp = gp + 1)
                for (gb = 0; gb < B; gb = gb + 1)
                    g_u[(gp * B + gb) * WU +: WU] <= pick_u(t0mem[gb*L*WU +: L*WU], cw2[gp*B*LW + gb*LW +: LW]);
    end
    function [AB-1:0] sim_raw;
        input [B*WU-1:0] gu;
        integer b, st;
        reg [B*AB-1:0] t;
        begin
            for (b = 0; b < B; b = b + 1)
                t[b*AB +: AB] = {{(AB - WU){1'b0}}, gu[b*WU +: WU]};
            for (st = 1; st < B; st = st * 2)
                for (b = 0; b + st < B; b = b + 2 * st)
                    if (DOT != 0) t[b*AB +: AB] = t[b*AB +: AB] + t[(b + st)*AB +: AB];
                    else if (t[(b + st)*AB +: AB] < t[b*AB +: AB]) t[b*AB +: AB] = t[(b + st)*AB +: AB];
            sim_raw = t[AB-1:0];
        end
    endfunction
    integer sp;
    always @(posedge clk) begin
        if (g_v)
            for (sp = 0; sp < P; sp = sp + 1)
                s2_raw[sp*AB +: AB] <= sim_raw(g_u[sp*B*WU +: B*WU]);
    end

    // stage 2: a = saturate(raw + perturbation), 0 for lanes past M; and whether a >= T,
    // compared with the sum beside the saturation (a negative sum saturates to 0, kept only
    // if T = 0; one above A_MAX to A_MAX >= T), so stage 3 starts its reductions at flip-flops
    reg [P*AB-1:0] s2_a;
    reg [P-1:0]    s2_kept;
    reg [PW-1:0]   s2_pv;
    reg [EW-1:0]   s2_se;
    integer ap;
    always @* begin
        for (ap = 0; ap < P; ap = ap + 1) begin
            s2_pv = (PERTURB != 0) ? pert_data[ap*PW +: PW] : {PW{1'b0}};
            s2_se = {{(EW - AB){1'b0}}, s2_raw[ap*AB +: AB]} + {{(EW - PW){s2_pv[PW-1]}}, s2_pv};
            s2_a[ap*AB +: AB] = (s2_se[EW-1] || !s2_ok[ap]) ? {AB{1'b0}} :
                                (s2_se > {{(EW - AB){1'b0}}, A_MAX}) ? A_MAX : s2_se[AB-1:0];
            s2_kept[ap] = s2_ok[ap] && (s2_se[EW-1] ? (T_A == {AB{1'b0}})
                                                    : (s2_se >= {{(EW - AB){1'b0}}, T_A}));
        end
    end

    // stage 3: the saturated similarities are registered, then reduced (the saturating
    // add and the reductions in separate cycles)
    reg            s3_v;
    reg [IW:0]     s3_chm;
    reg [P*AB-1:0] s3_a;               // 0 for lanes past M
    reg [P-1:0]    s3_kept;            // a >= T (and m < M)
    // s3_ar / s3_kr: copies of s3_a / s3_kept for the reductions below (each in a "keep"
    // process); the originals also feed the chunk registers amem / kmem, placed far from the
    // reductions (that route was 2.8 of the 10.4 ns critical path at f2-l16-m16-p4)
    reg [P*AB-1:0] s3_ar;
    reg [P-1:0]    s3_kr;
    always @(posedge clk) begin
        s3_v <= !rst && s2_v;
        s3_chm <= s2_chm;
    end
    (* keep *) always @(posedge clk) s3_a <= s2_a;
    (* keep *) always @(posedge clk) s3_kept <= s2_kept;
    (* keep *) always @(posedge clk) s3_ar <= s2_a;
    (* keep *) always @(posedge clk) s3_kr <= s2_kept;

    // stage-3 reductions: the chunk's lanes as balanced trees (max: the lower lane wins
    // ties, so the lowest m of the chunk's maximum; lanes past M count as 0 and never win),
    // with P >= 8 lanes (trees of three levels or more) the first level (adjacent lane
    // pairs) is registered in a stage of its own, H, and the rest is reduced in the next
    // cycle: two short cycles, not one long one (the 8-lane max tree set fmax at 11.6 ns);
    // with fewer lanes the stage is combinational (registering it grew the bundle's logic
    // 3,500 LUT4 at P = 4 through synthesis and routed slower); stage 4 merges them with
    // the running values (strict >: an earlier chunk, lower m, wins ties), as the ascending
    // scan of the model
    localparam integer NH = (P + 1) / 2;         // lane pairs
    reg            h_v;
    reg [NH*AB-1:0] h_max, hn_max;
    reg [NH*IW-1:0] h_arg, hn_arg;
    reg [NH*SW-1:0] h_all, hn_all, h_kept, hn_kept;
    reg [NH-1:0]    h_any, hn_any;
    reg [AB-1:0]    h_a0, h_a1;
    localparam [IW-1:0] ONE_IW = 1;
    integer hle;                                  // a pair's even lane (a loop variable: constant
                                                 // when unrolled, so every select is static)
    always @* begin
        for (hle = 0; hle < 2 * NH; hle = hle + 2) begin
            h_a0 = s3_ar[hle*AB +: AB];
            hn_max[(hle/2)*AB +: AB] = h_a0;
            hn_arg[(hle/2)*IW +: IW] = s3_chm[IW-1:0] + hle[IW-1:0];
            hn_all[(hle/2)*SW +: SW] = {{(SW - AB){1'b0}}, h_a0};
            hn_kept[(hle/2)*SW +: SW] = s3_kr[hle] ? {{(SW - AB){1'b0}}, h_a0} : {SW{1'b0}};
            hn_any[hle/2] = s3_kr[hle];
            if (hle + 1 < P) begin
                h_a1 = s3_ar[(hle + 1)*AB +: AB];
                if (h_a1 > h_a0) begin
                    hn_max[(hle/2)*AB +: AB] = h_a1;
                    hn_arg[(hle/2)*IW +: IW] = s3_chm[IW-1:0] + hle[IW-1:0] + ONE_IW;
                end
                hn_all[(hle/2)*SW +: SW] = hn_all[(hle/2)*SW +: SW] + {{(SW - AB){1'b0}}, h_a1};
                if (s3_kr[hle + 1])
                    hn_kept[(hle/2)*SW +: SW] = hn_kept[(hle/2)*SW +: SW] + {{(SW - AB){1'b0}}, h_a1};
                hn_any[hle/2] = hn_any[hle/2] || s3_kr[hle + 1];
            end else
                h_a1 = {AB{1'b0}};
        end
    end
    generate
        if (P >= 8) begin : g_hreg
            always @(posedge clk) begin
                h_v <= !rst && s3_v;
                {h_max, h_arg, h_all, h_kept, h_any} <= {hn_max, hn_arg, hn_all, hn_kept, hn_any};
            end
        end else begin : g_hcomb
            always @* begin
                h_v = s3_v;
                {h_max, h_arg, h_all, h_kept, h_any} = {hn_max, hn_arg, hn_all, hn_kept, hn_any};
            end
        end
    endgenerate
    reg            s4_v;
    reg [AB-1:0]   s4_max;
    reg [IW-1:0]   s4_arg;
    reg [SW-1:0]   s4_all, s4_kept;
    reg            s4_any;
    reg [AB-1:0]   r_max;
    reg [IW-1:0]   r_arg;
    reg [SW-1:0]   r_all;
    reg [SW-1:0]   r_kept;
    reg            r_any;
    reg [NH*AB-1:0] t_max;
    reg [NH*IW-1:0] t_arg;
    reg [NH*SW-1:0] t_all, t_kept;
    reg [NH-1:0]    t_any;
    integer rp, rs;
    always @* begin
        t_max = h_max;
        t_arg = h_arg;
        t_all = h_all;
        t_kept = h_kept;
        t_any = h_any;
        for (rs = 1; rs < NH; rs = rs * 2)
            for (rp = 0; rp + rs < NH; rp = rp + 2 * rs) begin
                if (t_max[(rp + rs)*AB +: AB] > t_max[rp*AB +: AB]) begin
                    t_max[rp*AB +: AB] = t_max[(rp + rs)*AB +: AB];
                    t_arg[rp*IW +: IW] = t_arg[(rp + rs)*IW +: IW];
                end
                t_all[rp*SW +: SW] = t_all[rp*SW +: SW] + t_all[(rp + rs)*SW +: SW];
                t_kept[rp*SW +: SW] = t_kept[rp*SW +: SW] + t_kept[(rp + rs)*SW +: SW];
                t_any[rp] = t_any[rp] || t_any[rp + rs];
            end
    end
    always @(posedge clk) begin
        s4_v <= !rst && h_v;
        s4_max <= t_max[AB-1:0];
        s4_arg <= t_arg[IW-1:0];
        s4_all <= t_all[SW-1:0];
        s4_kept <= t_kept[SW-1:0];
        s4_any <= t_any[0];
    end
    always @* begin
        r_max = amax;
        r_arg = argmax;
        if (s4_max > amax) begin
            r_max = s4_max;
            r_arg = s4_arg;
        end
        r_all = sum_all + s4_all;
        r_kept = sum_kept + s4_kept;
        r_any = any_kept || s4_any;
    end

    // The chunks' similarities and "kept" bits (a >= T) in shift registers of chunks: SIM
    // shifts each chunk in at the top (the chunks arrive in ascending order, so after the
    // NCH chunks chunk c is at position c; lanes past M are stored as 0), and BUND rotates
    // them down by one chunk per codebook word, so BUND's lane p always reads position p
    // (no chunk select in the weight lookup) and NCH rotations leave them in order again
    // (for the debug port at STEP).  A reset midway leaves them rotated, but every SIM
    // shifts in all NCH chunks before the next BUND that reads them.
    localparam integer NA = NCP * AB, TOPA = (NCH - 1) * P * AB, TOPK = (NCH - 1) * P;
    reg  [NCP-1:0] kmem;               // a_m >= T (m < M)
    wire           a_rot = (state == ST_BUND) && c1_v;
    function [NA-1:0] rot_a;           // down by one chunk
        input [NA-1:0] v;
        integer i;
        for (i = 0; i < NA; i = i + 1)
            rot_a[i] = v[(i + P * AB) % NA];
    endfunction
    function [NCP-1:0] rot_k;
        input [NCP-1:0] v;
        integer i;
        for (i = 0; i < NCP; i = i + 1)
            rot_k[i] = v[(i + P) % NCP];
    endfunction
    wire           unused_s3_chm = s3_chm[IW];   // argmax indices are < M (IW bits)
    always @(posedge clk) begin
        if (s3_v || a_rot) begin
            amem <= rot_a(amem);
            kmem <= rot_k(kmem);
            if (s3_v) begin
                amem[TOPA +: P*AB] <= s3_a;
                kmem[TOPK +: P] <= s3_kept;
            end
        end
    end

    // ------------------------------------------------------------------ activation
    reg sampled, pulled;
    wire dec_sampled = SAMPLE_ON && (amax <= T_A);
    wire dec_pulled  = !dec_sampled && (amax >= TC_A);
    wire [SW-1:0] dec_S = dec_pulled ? S_ONE : dec_sampled ? S_A : (any_kept ? sum_kept : sum_all);

    // Weight of a codevector (the dbg_w port; BUND computes the same from rotated flags).
    function [AB-1:0] weight;
        input [3:0]    mode;           // {init_mode, pulled, sampled, any_kept}
        input          is_arg;         // m == argmax
        input [AB-1:0] a;
        input          tk;             // taken[m]
        begin
            if (mode[3]) weight = {{(AB - 1){1'b0}}, 1'b1};
            else if (mode[2]) weight = {{(AB - 1){1'b0}}, is_arg};
            else if (mode[1]) weight = {{(AB - 1){1'b0}}, tk};
            else if (!mode[0] || a >= T_A) weight = a;
            else weight = {AB{1'b0}};
        end
    endfunction

    // LFSR: KB steps per cycle, the first output bit into the word's MSB
    reg [31:0]    lf_next;
    reg [KB-1:0]  lf_word;
    integer li2;
    always @* begin
        lf_next = lfsr;
        lf_word = {KB{1'b0}};
        for (li2 = 0; li2 < KB; li2 = li2 + 1) begin
            lf_word[KB - 1 - li2] = lf_next[0];
            lf_next = lf_next[0] ? ((lf_next >> 1) ^ TAPS) : (lf_next >> 1);
        end
    end
    wire [TK-1:0] lf_onehot = {{(TK - 1){1'b0}}, 1'b1} << lf_word;
    wire          draw_ok = ({1'b0, lf_word} < M_CH) && !taken[lf_word];
    reg  [15:0]   n_draw;              // accepted indices
    reg  [15:0]   n_words;             // LFSR words consumed in this factor step

    // per-query LFSR seed (docs/lfsr.md)
    // computed in three registered steps from ld_qid; seed_age counts the cycles since
    // ld_qid changed, and WAIT takes the seed at 3.  (qid + 1) MIX mod 2^32 = qid MIX_lo +
    // (qid MIX_hi mod 2^16) 2^16 + MIX: two QW x 16 products (one DSP each, straight from
    // ld_qid), then their sum, then the xorshift and the zero check
    localparam [31:0] QMIX_LO = {16'd0, QMIX[15:0]};
    localparam [31:0] QMIX_HI = {16'd0, QMIX[31:16]};
    reg  [31:0] qs_lo, qs_hi, qs_m0, q_seed;
    reg  [1:0]  seed_age;
    wire [31:0] qs_q  = {{(32 - QW){1'b0}}, ld_qid};
    wire [31:0] qs_m1 = qs_m0 ^ (qs_m0 >> `HDSIM_LFSR_QUERY_SHIFT);
    wire [31:0] qs_s  = SEED ^ qs_m1;
    wire        seed_ok = (seed_age == 2'd3);
    wire        unused_qs_hi = ^qs_hi[31:16];   // only the low half reaches bits 16..31
    always @(posedge clk) begin
        qs_lo <= qs_q * QMIX_LO;
        qs_hi <= qs_q * QMIX_HI;
        qs_m0 <= qs_lo + {qs_hi[15:0], 16'd0} + QMIX;
        q_seed <= (qs_s == 32'd0) ? SEED : qs_s;
        if (rst || (ld_fire && ld_blk == 0)) seed_age <= 2'd0;
        else if (!seed_ok) seed_age <= seed_age + 2'd1;
    end

    // ------------------------------------------------------------------ bundling
    // Lane p of chunk c is codevector c P + p.  Its weight comes from position p of
    // registers that BUND rotates by one chunk per codebook word (amem, kmem above, wbit),
    // so the lookup is a few gates on flip-flops: no chunk select, compare or adder.
    // wbit holds the one-bit weights: [m == argmax] when pulled (set in DEC), taken[m] when
    // sampled (set in DEC for A >= M, by DRAW otherwise); 0 at m >= M.
    reg [NCP-1:0]  wbit;
    reg [NCP-1:0]  wb_arg, wb_all, wb_draw;
    integer wm;
    always @* begin
        for (wm = 0; wm < NCP; wm = wm + 1) begin
            wb_arg[wm] = (wm < M) && (argmax == wm[IW-1:0]);
            wb_all[wm] = (wm < M);
            wb_draw[wm] = (wm < M) && draw_ok && (lf_word == wm[KB-1:0]);
        end
    end
    always @(posedge clk) begin
        if (state == ST_DEC) wbit <= dec_pulled ? wb_arg : (dec_sampled && SAMPLE_ALL) ? wb_all : {NCP{1'b0}};
        else if (state == ST_DRAW) wbit <= wbit | wb_draw;
        else if (a_rot) wbit <= rot_k(wbit);
    end
    reg [P*AB-1:0] bw;                 // lane weights
    reg            bw_sel_a, bw_bit;
    integer wp;
    always @* begin
        for (wp = 0; wp < P; wp = wp + 1) begin
            // weight(): 1 (init, m < M); the bit when pulled or sampled; else a_m if a_m >= T
            // or nothing was kept, else 0
            bw_sel_a = !init_mode && !pulled && !sampled && (!any_kept || kmem[wp]);
            bw_bit = init_mode ? lane_ok[wp] : ((pulled || sampled) && wbit[wp]);
            bw[wp*AB +: AB] = bw_sel_a ? amem[wp*AB +: AB] : {{(AB - 1){1'b0}}, bw_bit};
        end
    end

    // cell (b, l) adds the weights of the lanes whose codeword has l in block b (a balanced
    // adder tree over the lanes); the codewords arrive decoded (one bit per lane and cell)
    function [SW-1:0] cell_add;
        input [P*D-1:0]    hot;
        input [P*AB-1:0]   bwv;
        input integer      ce;
        integer p, st;
        reg [P*SW-1:0] t;
        begin
            for (p = 0; p < P; p = p + 1)
                t[p*SW +: SW] = hot[p*D + ce] ? {{(SW - AB){1'b0}}, bwv[p*AB +: AB]} : {SW{1'b0}};
            for (st = 1; st < P; st = st * 2)
                for (p = 0; p + st < P; p = p + 2 * st)
                    t[p*SW +: SW] = t[p*SW +: SW] + t[(p + st)*SW +: SW];
            cell_add = t[SW-1:0];
        end
    endfunction
    // two stages after the ROM read: B1 registers the chunk's weights and its codewords
    // decoded (lane p has entry l in block b: bit p D + b L + l), B2 adds them into the
    // accumulators (the weight lookup, the decode and the adders in separate cycles)
    reg            b2_v, b2_first;
    reg [P*D-1:0]  b2_hot;
    reg [B*P*AB-1:0] b2_w;             // the lane weights, one copy per block (fanout L cells each)
    integer hp, hb, hl;
    always @(posedge clk) begin
        b2_v <= !rst && (state == ST_BUND) && c1_v;
        b2_first <= (c1_chm == 0);
        if (c1_v)
            for (hp = 0; hp < P; hp = hp + 1)
                for (hb = 0; hb < B; hb = hb + 1)
                    for (hl = 0; hl < L; hl = hl + 1)
                        b2_hot[hp*D + hb*L + hl] <= (cw[hp*B*LW + hb*LW +: LW] == hl[LW-1:0]);
    end
    genvar bwb;
    generate
        for (bwb = 0; bwb < B; bwb = bwb + 1) begin : g_bw
            (* keep *) always @(posedge clk) b2_w[bwb*P*AB +: P*AB] <= bw;   // kept apart by synthesis
        end
    endgenerate
    integer be;
    always @(posedge clk) begin
        if (b2_v)
            for (be = 0; be < D; be = be + 1)
                smem[be*SW +: SW] <= (b2_first ? {SW{1'b0}} : smem[be*SW +: SW]) + cell_add(b2_hot, b2_w[(be / L)*P*AB +: P*AB], be);
    end

    // ------------------------------------------------------------------ normalization
    reg  [GW-1:0]   ng;
    wire [SHW-1:0]  n_sh = (cur_S == 0) ? {SHW{1'b0}} :
                           {{(SHW - PBW){1'b0}}, cur_p} + G[SHW-1:0] - WX[SHW-1:0];
    localparam [PRW-1:0] OV_MASK0 = {PRW{1'b1}} << WX;
    function [XCW-1:0] cnt_add;        // c + popcount(v) (at most L)
        input [XCW-1:0] c;
        input [P-1:0]   v;
        integer i;
        begin
            cnt_add = c;
            for (i = 0; i < P; i = i + 1)
                cnt_add = cnt_add + {{(XCW - 1){1'b0}}, v[i]};
        end
    endfunction
    // group g of the accumulators, by comparing ng with constants (AND-OR, no address)
    function [P*SW-1:0] pick_s;
        input [D*SW-1:0] sv;
        input [GW-1:0]   g;
        integer i;
        begin
            pick_s = {P*SW{1'b0}};
            for (i = 0; i < NG; i = i + 1)
                pick_s = pick_s | ({P*SW{g == i[GW-1:0]}} & sv[i*P*SW +: P*SW]);
        end
    endfunction
    // four stages: N1 selects P accumulators (with the shift), N2 multiplies by R, N3
    // shifts and saturates into registers, N4 writes the estimate words by a per-group
    // enable (N4 of the last group runs in the cycle after NORM: STEP, BUND or WAIT, none
    // of which reads xmem; dbg_x shows it through a bypass)
    reg              n_last_done;      // the last group has been issued; NORM drains
    // N2 multiplies by cur_R itself (not a copy registered in N1), so N1 may run in the
    // divider's last cycle: R is final at its end
    wire             n_we = (state == ST_NORM) && (!div_busy || div_left == 1) && !n_last_done;
    reg              n2_v, n3_v, n4_v;
    reg [P*SW-1:0]   n2_s;
    reg [SHW-1:0]    n2_sh, n3_sh;
    reg [PRW-1:0]    n3_mask;
    reg [PRW-1:0]    n3_nzmask;        // bits sh and above: x != 0 iff the product has one
    reg [GW-1:0]     n2_g, n3_g, n4_g;
    reg [FW-1:0]     n4_f;
    reg [P*PRW-1:0]  n3_pr;
    reg [P*WX-1:0]   n4_x;
    reg [P-1:0]      n4_nz;
    reg [P*WX-1:0]   n3_x;             // N3: the shifted, saturated words
    reg [P*PRW-1:0]  n3_shr;           // N3: the shifted products (their low WX bits are kept)
    integer np, nf, nw, nx;
    // x = sat(pr >> sh, WX), pr = s * R: the saturation test pr >= 2^(WX + sh) masks the
    // product's bits (n3_mask: its bits WX + sh and above, fixed for the phase), in parallel
    // with the shift rather than after it
    always @* begin
        for (nx = 0; nx < P; nx = nx + 1) begin
            n3_shr[nx*PRW +: PRW] = n3_pr[nx*PRW +: PRW] >> n3_sh;
            n3_x[nx*WX +: WX] = ((n3_pr[nx*PRW +: PRW] & n3_mask) != {PRW{1'b0}}) ? X_MAX
                                                                                  : n3_shr[nx*PRW +: WX];
        end
    end
    wire unused_n3_shr = ^n3_shr;      // above WX a shifted product is only tested, by the mask
    always @(posedge clk) begin
        n2_v <= !rst && n_we;
        n3_v <= !rst && n2_v;
        n4_v <= !rst && n3_v;
        if (n_we) n2_s <= pick_s(smem, ng);
        n2_sh <= n_sh;
        n2_g <= ng;
        if (n2_v)
            for (np = 0; np < P; np = np + 1)
                n3_pr[np*PRW +: PRW] <= {{RW{1'b0}}, n2_s[np*SW +: SW]} * {{SW{1'b0}}, cur_R};
        n3_sh <= n2_sh;
        n3_mask <= OV_MASK0 << n2_sh;
        n3_nzmask <= {PRW{1'b1}} << n2_sh;
        n3_g <= n2_g;
        if (n3_v) begin
            n4_x <= n3_x;
            for (np = 0; np < P; np = np + 1)
                // x != 0 iff pr >> sh != 0 (a saturated x is X_MAX != 0 and has such a bit
                // too): a mask beside the shifter, not a test after it
                n4_nz[np] <= ((n3_pr[np*PRW +: PRW] & n3_nzmask) != {PRW{1'b0}});
        end
        n4_g <= n3_g;
        n4_f <= fcur;                  // N3 of the last group runs before fcur moves on
        // groups are written in ascending order, so a block's count restarts at its first group
        if (n4_v)
            for (nf = 0; nf < F; nf = nf + 1)
                for (nw = 0; nw < NG; nw = nw + 1)
                    if (n4_f == nf[FW-1:0] && n4_g == nw[GW-1:0]) begin
                        xmem[(nf*NG + nw)*P*WX +: P*WX] <= n4_x;
                        xnz[(nf*NG + nw)*P +: P] <= n4_nz;
                        xcnt[(nf*B + nw/GPB)*XCW +: XCW] <=
                            cnt_add((nw % GPB == 0) ? {XCW{1'b0}} : xcnt[(nf*B + nw/GPB)*XCW +: XCW], n4_nz);
                    end
    end


    // UJ > 1: each estimate word's rank among its block's non-zero words (U0 picks a cycle's
    // positions by rank), written by N4 beside xnz: the words of a group before it in its
    // block (0 at a block's first group, else n4_run, the block's count so far) plus the
    // group's non-zero lanes below it.  A zero word's rank is never used.
    generate
        if (UJ > 1) begin : g_rank
            reg  [F*D*LW-1:0] xrank;
            reg  [XCW-1:0]    n4_run;            // non-zero words of n4_g's block before n4_g
            reg               n4_first;          // n4_g is its block's first group (set with n4_g)
            reg               n3_first;
            reg  [XCW-1:0]    rk_c, rk_nx, rk_pre;
            reg  [P*LW-1:0]   rk_w;              // the group's ranks
            integer rw, rl, rf2, rg2;
            // popcount(v[n-1:0]) as logic (a thermometer of the count, then its value), so
            // each rank is one addition to the base: written as additions, synthesis chained
            // the lanes' carry chains in series (set fmax at 82.8-90.8 MHz at f2-l16-m16-p4)
            function [XCW-1:0] pop_below;
                input [P-1:0] v;
                input integer n;
                integer i, k;
                reg [P:0] th;                  // th[k]: at least k ones so far (th[0] = 1)
                begin
                    th = {{P{1'b0}}, 1'b1};
                    for (i = 0; i < n; i = i + 1)
                        for (k = P; k > 0; k = k - 1)
                            th[k] = th[k] | (th[k-1] & v[i]);
                    pop_below = {XCW{1'b0}};
                    for (k = 1; k <= P; k = k + 1)
                        if (k < P) pop_below = pop_below | ({XCW{th[k] & !th[k+1]}} & k[XCW-1:0]);
                        else pop_below = pop_below | ({XCW{th[k]}} & k[XCW-1:0]);
                end
            endfunction
            always @* begin
                n3_first = 1'b0;
                for (rw = 0; rw < NG; rw = rw + 1)
                    if (n3_g == rw[GW-1:0] && rw % GPB == 0) n3_first = 1'b1;
                rk_c = n4_first ? {XCW{1'b0}} : n4_run;
                for (rl = 0; rl < P; rl = rl + 1) begin
                    rk_pre = rk_c + pop_below(n4_nz, rl);
                    rk_w[rl*LW +: LW] = rk_pre[LW-1:0];
                end
                rk_nx = rk_c + pop_below(n4_nz, P);
            end
            wire unused_rk_pre = rk_pre[XCW-1];  // a rank of a non-zero word is < L
            always @(posedge clk) n4_first <= n3_first;
            always @(posedge clk) begin
                if (n4_v) begin
                    n4_run <= rk_nx;
                    for (rf2 = 0; rf2 < F; rf2 = rf2 + 1)
                        for (rg2 = 0; rg2 < NG; rg2 = rg2 + 1)
                            if (n4_f == rf2[FW-1:0] && n4_g == rg2[GW-1:0])
                                xrank[(rf2*NG + rg2)*P*LW +: P*LW] <= rk_w;
                end
            end
            assign xrk = xrank;
        end else begin : g_norank
            assign xrk = {F*D*LW{1'b0}};
        end
    endgenerate

    // ------------------------------------------------------------------ control
    reg [31:0] cycle;
    reg [31:0] start_cycle;
    integer    xf;
    always @* begin
        div_go = 1'b0;
        div_S = S_M;
        if (state == ST_INIT) div_go = 1'b1;
        if (state == ST_DEC) begin
            div_go = 1'b1;
            div_S = dec_S;
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            state <= ST_INIT;
            m_valid <= 1'b0;
            init_mode <= 1'b1;
            fcur <= {FW{1'b0}};
            fbase <= {MW{1'b0}};
            s2_v <= 1'b0;
            c1_v <= 1'b0;
            n_last_done <= 1'b0;
            cycle <= 32'd0;
            start_cycle <= 32'd0;
            iter <= {ITW{1'b0}};
            qid <= {QW{1'b0}};
        end else begin
            cycle <= cycle + 1'b1;
            if (m_valid && m_ready) m_valid <= 1'b0;
            s2_v <= 1'b0;
            c1_v <= cb_issue;
            case (state)
            ST_INIT: begin              // divider started with S = M
                init_mode <= 1'b1;
                fcur <= {FW{1'b0}};
                fbase <= {MW{1'b0}};
                chm <= {(IW + 1){1'b0}};
                chk <= {MW{1'b0}};
                state <= ST_BUND;
            end
            ST_WAIT: begin
                if (q_full && seed_ok) begin
                    qid <= ld_qid;
                    lfsr <= q_seed;
                    iter <= {{(ITW - 1){1'b0}}, 1'b1};
                    all_pulled <= 1'b1;
                    start_cycle <= cycle;
                    uc <= {FW{1'b0}};
                    {u_first, u_out1, ugh} <= {1'b1, F_ODD, ug_hot({FW{1'b0}}, {FW{1'b0}})};
                    state <= ST_ULD;    // fcur = 0, fbase = 0 since the init pass
                end
            end
            ST_ULD: begin               // windows load block 0 (after the last correlation's writes)
                ublk <= {BW{1'b0}};
                ul0 <= {LW{1'b0}};
                u_blkend <= BLKEND0;
                ugrp <= {GW{1'b0}};
                if (!uld_wait) state <= ST_UNB;
            end
            ST_UNB: begin
                if (u_last_j) begin
                    ugrp <= ugrp + 1'b1;
                    if (!u_last_l0) begin
                        ul0 <= ul0 + P_L;
                        u_blkend <= (ul0 + P_L == L0_LAST) && !u_last_blk;
                    end else begin
                        ul0 <= {LW{1'b0}};
                        ublk <= ublk + 1'b1;
                        u_blkend <= BLKEND0 && (ublk + 1'b1 != B_LAST);
                        if (u_last_blk) begin
                            if (!u_last_corr) begin
                                uc <= uc + 1'b1;
                                {u_first, u_out1, ugh} <= {1'b0, !u_out1, ug_hot(uc + 1'b1, fcur)};
                                state <= ST_ULD;
                            end else begin
                                chm <= {(IW + 1){1'b0}};
                                chk <= {MW{1'b0}};
                                amax <= {AB{1'b0}};
                                argmax <= {IW{1'b0}};
                                sum_all <= {SW{1'b0}};
                                sum_kept <= {SW{1'b0}};
                                any_kept <= 1'b0;
                                state <= ST_SIM;
                            end
                        end
                    end
                end
            end
            ST_SIM: begin
                if (sim_issue) begin    // ROM read of the chunk
                    chm <= chm + P_CH;
                    chk <= chk + 1'b1;
                end
                if (g_v) begin          // stage G -> 2
                    s2_v <= 1'b1;
                    s2_chm <= g_chm;
                    s2_ok <= g_ok;
                end
                if (s4_v) begin
                    amax <= r_max;
                    argmax <= r_arg;
                    sum_all <= r_all;
                    sum_kept <= r_kept;
                    any_kept <= r_any;
                end
                if (!sim_more && !c1_v && !c2_v && !g_v && !s2_v && !s3_v && !h_v) state <= ST_DEC;   // the last chunk's stage 4 runs now
            end
            ST_DEC: begin               // divider started with dec_S
                sampled <= dec_sampled;
                pulled <= dec_pulled;
                all_pulled <= all_pulled & dec_pulled;
                for (xf = 0; xf < F; xf = xf + 1)
                    if (fcur == xf[FW-1:0]) idx_r[xf*IW +: IW] <= argmax;
                taken <= (dec_sampled && SAMPLE_ALL) ? {TK{1'b1}} : {TK{1'b0}};
                n_draw <= 16'd0;
                n_words <= 16'd0;
                chm <= {(IW + 1){1'b0}};
                chk <= {MW{1'b0}};
                state <= (dec_sampled && !SAMPLE_ALL) ? ST_DRAW : ST_BUND;
            end
            ST_DRAW: begin
                lfsr <= lf_next;
                n_words <= n_words + 1'b1;
                if (draw_ok) begin
                    taken <= taken | lf_onehot;
                    n_draw <= n_draw + 1'b1;
                    if (n_draw == A_LAST) state <= ST_BUND;
                end
            end
            ST_BUND: begin
                if (chm < M_CH) begin   // ROM read of the chunk; its update is two cycles later
                    chm <= chm + P_CH;
                    chk <= chk + 1'b1;
                end else if (!c1_v) begin   // the last chunk's update now
                    ng <= {GW{1'b0}};
                    state <= ST_NORM;
                end
            end
            ST_NORM: begin
                if (n_we) begin
                    if (ng != G_LAST) begin
                        ng <= ng + 1'b1;
                    end else begin
                        n_last_done <= 1'b1;
                    end
                end else if (n_last_done && !n2_v) begin   // N3 writes the last group now
                    n_last_done <= 1'b0;
                    if (init_mode) begin
                        chm <= {(IW + 1){1'b0}};
                        chk <= {MW{1'b0}};
                        if (fcur == F_LAST) begin
                            init_mode <= 1'b0;
                            fcur <= {FW{1'b0}};
                            fbase <= {MW{1'b0}};
                            state <= ST_WAIT;
                        end else begin
                            fcur <= fcur + 1'b1;
                            fbase <= fbase + NCH_MW;
                            state <= ST_BUND;   // every init factor has S = M: the same R
                        end
                    end else begin
                        state <= ST_STEP;
                    end
                end
            end
            ST_STEP: begin
                uc <= {FW{1'b0}};
                {u_first, u_out1, ugh} <= {1'b1, F_ODD, ug_hot({FW{1'b0}}, (fcur != F_LAST) ? fcur + 1'b1 : {FW{1'b0}})};
                if (fcur != F_LAST) begin
                    fcur <= fcur + 1'b1;
                    fbase <= fbase + NCH_MW;
                    state <= ST_ULD;
                end else if (all_pulled || iter == IT_MAX) begin
                    state <= ST_DONE;
                end else begin
                    iter <= iter + 1'b1;
                    fcur <= {FW{1'b0}};
                    fbase <= {MW{1'b0}};
                    all_pulled <= 1'b1;
                    state <= ST_ULD;
                end
            end
            ST_DONE: begin
                if (res_take) begin
                    m_valid <= 1'b1;
                    m_idx <= idx_r;
                    m_iters <= iter;
                    m_conv <= all_pulled;
                    m_qid <= qid;
                    state <= ST_INIT;
                end
            end
            default: state <= ST_INIT;
            endcase
        end
    end

    // ------------------------------------------------------------------ debug port
    generate
        if (DEBUG != 0) begin : g_dbg
            reg [M*AB-1:0] wv;
            wire [3:0] w_mode = {init_mode, pulled, sampled, any_kept};
            reg [D*WX-1:0] xv;
            integer dm, dx, dg;
            always @* begin
                for (dm = 0; dm < M; dm = dm + 1)
                    wv[dm*AB +: AB] = weight(w_mode, argmax == dm[IW-1:0], amem[dm*AB +: AB], taken[dm]);
            end
            // fcur's estimate, with the group N4 writes at the end of this cycle (the last
            // group of NORM is written during STEP)
            always @* begin
                xv = {D*WX{1'b0}};
                for (dx = 0; dx < F; dx = dx + 1)
                    if (fcur == dx[FW-1:0]) xv = xmem[dx*D*WX +: D*WX];
                if (n4_v && n4_f == fcur)
                    for (dg = 0; dg < NG; dg = dg + 1)
                        if (n4_g == dg[GW-1:0]) xv[dg*P*WX +: P*WX] = n4_x;
            end
            assign dbg_step = (state == ST_STEP);
            assign dbg_qid = qid;
            assign dbg_iter = iter;
            assign dbg_factor = fcur;
            assign dbg_sampled = sampled;
            assign dbg_pulled = pulled;
            assign dbg_conv = all_pulled;
            assign dbg_amax = amax;
            assign dbg_argmax = argmax;
            assign dbg_S = cur_S;
            assign dbg_R = cur_R;
            assign dbg_lfsr = lfsr;
            assign dbg_draws = n_words;
            assign dbg_u = t0mem;
            assign dbg_a = amem[M*AB-1:0];
            assign dbg_w = wv;
            assign dbg_x = xv;
            assign dbg_cycle = cycle;
            assign dbg_start_cycle = start_cycle;
            assign dbg_state = state;
        end else begin : g_nodbg
            wire unused_dbg = ^{start_cycle, n_words};
            assign dbg_step = 1'b0;
            assign dbg_qid = {QW{1'b0}};
            assign dbg_iter = {ITW{1'b0}};
            assign dbg_factor = {FW{1'b0}};
            assign dbg_sampled = 1'b0;
            assign dbg_pulled = 1'b0;
            assign dbg_conv = 1'b0;
            assign dbg_amax = {AB{1'b0}};
            assign dbg_argmax = {IW{1'b0}};
            assign dbg_S = {SW{1'b0}};
            assign dbg_R = {RW{1'b0}};
            assign dbg_lfsr = 32'd0;
            assign dbg_draws = 16'd0;
            assign dbg_u = {D*WU{1'b0}};
            assign dbg_a = {M*AB{1'b0}};
            assign dbg_w = {M*AB{1'b0}};
            assign dbg_x = {D*WX{1'b0}};
            assign dbg_cycle = 32'd0;
            assign dbg_start_cycle = 32'd0;
            assign dbg_state = 4'd0;
        end
    endgenerate
endmodule
